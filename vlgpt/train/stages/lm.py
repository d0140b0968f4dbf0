"""What the two VL-GPT stages share: the run's frozen codec (images in as N embeddings each), the
model (our transformer, a local Hugging Face LM with `--lm`, or the previous stage's), LoRA, batching
of samples into sequences, evaluation and export.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ...core.checkpoint import CheckpointError
from ...core.config import ConfigError, VLGPTConfig
from ...core.hf_lm import load_local_lm
from ...data import sequences as S
from ...data.sources import WORLD, make_source
from ...inference.image_codec import ImageCodec
from ...models.hf_backbone import HFBackbone
from ...models.loading import load_vlgpt, save_vlgpt
from ...models.lora import add_lora, has_lora, lora_state_dict, merge_lora
from ...models.vlgpt import VLGPT
from ...world.dataset import ShapesWorld
from ...world.render import render
from ...world.scene import Scene
from .base import Stage, StageInputs

ADAPTER_FILE = "adapter.safetensors"


class LMStage(Stage):
    """Shared plumbing: the frozen codec, the tokenizer, batching of segment lists."""

    name = "lm"
    may_leave_parameters_unused = True  # a batch without image targets leaves the image head unused

    def __init__(
        self,
        inputs: StageInputs,
        run: Path,
        init_from: Path | None = None,
        lora: tuple[int, float, float] = (0, 32.0, 0.0),
        lm_path: str | Path | None = None,
        uncond_prob: float = 0.0,
        image_modeling: bool = False,
        layout_plan: bool = True,
        text_loss: str = "token",
    ):
        model_config, data, seed, val_data = inputs.model_config, inputs.data, inputs.seed, inputs.val_data
        self.run, self.seed, self.eval_size = Path(run), seed, inputs.eval_size
        if not 0 <= uncond_prob < 1:
            raise ConfigError(f"--uncond-prob must be in [0, 1), got {uncond_prob}")
        self.uncond_prob = uncond_prob
        self.image_modeling = image_modeling
        self.layout_plan = layout_plan
        if text_loss not in S.TEXT_LOSSES:
            raise ConfigError(f"--text-loss must be one of {', '.join(S.TEXT_LOSSES)}, got {text_loss!r}")
        self.text_loss = text_loss
        self.data, self.val_data = data, val_data
        self.custom = data != WORLD  # a dataset folder or shards instead of the Shapes world
        self.codec = ImageCodec.load(run)
        self.tokenizer = self.codec.text_tokenizer
        size = self.codec.image_size
        self.world, self.val_world = ShapesWorld("train", size, size), ShapesWorld("val", size, size)
        self.model_config = model_config
        torch.manual_seed(seed)
        if init_from is not None:
            if lm_path:
                raise CheckpointError(
                    f"--lm starts from a new language model, but {self.name} continues from "
                    f"{init_from} (its backbone comes along); drop --lm"
                )
            self.model, _, lm_tokenizer = load_vlgpt(init_from)
            self.tokenizer = lm_tokenizer or self.tokenizer
            self.model.train()
        elif lm_path:  # a local Hugging Face causal LM as the transformer; its tokenizer replaces our BPE
            hf_model, self.tokenizer = load_local_lm(lm_path)
            self.model = VLGPT(
                VLGPTConfig(
                    hf_model.get_input_embeddings().num_embeddings,
                    self.codec.num_tokens,
                    self.codec.token_dim,
                    model_config.lm,
                ),
                HFBackbone(hf_model),
            )
        else:
            self.model = VLGPT(
                VLGPTConfig(
                    self.tokenizer.vocab_size, self.codec.num_tokens, self.codec.token_dim, model_config.lm
                )
            )
        fit_head = hasattr(self.model.image_head, "fit_scale")
        if init_from is None and (
            fit_head or model_config.lm.normalize_inputs or model_config.lm.whiten_inputs
        ):
            # Measure the codec's embeddings once: their scale for a generative head, their
            # per-channel statistics for the input standardisation.
            probe = make_source(data if self.custom else WORLD, size, seed, part="train")
            embeddings = torch.cat(self.encode_images([probe.get(i)[0] for i in range(64)]))
            if fit_head:
                self.model.image_head.fit_scale(embeddings)
            self.model.fit_input_stats(embeddings)
        if image_modeling and self.model.draw_queries is not None:
            raise ConfigError(
                "--image-modeling trains the images the model reads as if it drew them, but with "
                "lm.draw=queries a drawn image's places hold queries, not the image: drop one of them"
            )
        if lora[0] > 0:  # VL-GPT §3.2: adapters on every linear layer; the transformer itself frozen
            add_lora(self.model, *lora)
        self.max_len = self.model.max_seq_len

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None, **extra):
        lora = (train.lora_rank, train.lora_alpha, train.lora_dropout)
        return cls(
            inputs,
            run=run,
            lora=lora,
            lm_path=train.lm or None,
            uncond_prob=train.uncond_prob,
            image_modeling=train.image_modeling,
            layout_plan=train.layout_plan,
            text_loss=train.text_loss,
            **extra,
        )

    def dataset_sources(self, make) -> tuple:
        """`make(path, image_size, seed, part, holdout)` for training and validation: `--val-data`, or
        the last `eval_size` examples of `--data` held out."""
        holdout = self.eval_size if self.val_data is None else 0
        size = self.codec.image_size
        return (
            make(self.data, size, self.seed, part="train", holdout=holdout),
            make(self.val_data or self.data, size, self.seed, part="val", holdout=holdout),
        )

    def encode_images(self, images: list[Scene | np.ndarray]) -> list[torch.Tensor]:
        """N embeddings per image; an image is a Shapes scene (rendered here) or an RGB array."""
        if not images:
            return []
        return list(self.codec.encode([np.asarray(render(x)) if isinstance(x, Scene) else x for x in images]))

    def batch(self, start: int, size: int, part: str = "train") -> dict:
        samples = [self.sample(i, part) for i in range(start, start + size)]  # (segments, their images)
        embeddings = self.encode_images([image for _, images in samples for image in images])
        sequences = []
        for segments, _ in samples:
            resolved = []
            for seg in segments:
                if seg.kind == "image":  # the value is an index into this sample's scenes
                    seg = S.image(embeddings.pop(0), seg.train or self.image_modeling)
                resolved.append(seg)
            seq = S.build(
                resolved,
                self.tokenizer,
                self.codec.token_dim,
                text_loss=self.text_loss,
                draw_queries=self.model.draw_queries is not None,
            )
            if (
                len(seq["ids"]) > self.max_len
            ):  # over-long documents are cut (never seen with Shapes defaults)
                seq = {k: v[: self.max_len] for k, v in seq.items()}
            sequences.append(seq)
        return S.collate(sequences, self.tokenizer.pad_id)

    def loss(self, batch: dict):
        out = self.model(batch)
        return out["loss"], {"ce": out["ce"], "mse": out["mse"]}

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def evaluate(self) -> dict:
        from ...eval.quick import quick_eval

        self.model.eval()
        if self.custom:  # no judge for arbitrary images: the held-out loss
            return self.validation_loss()
        return quick_eval(self, n=self.eval_size)

    @torch.no_grad()
    def validation_loss(self, batch_size: int = 8) -> dict:
        n = (
            min(self.eval_size, len(self.val_source))
            if hasattr(self.val_source, "__len__")
            else self.eval_size
        )
        totals, count = {"loss": 0.0, "ce": 0.0, "mse": 0.0}, 0
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            out = self.model(self.batch(start, size, part="val"))
            for key in totals:
                totals[key] += float(out[key]) * size
            count += size
        return {f"val_{key}": value / max(count, 1) for key, value in totals.items()}

    def export(self, directory: Path) -> None:
        """config.json + model.safetensors (adapters merged in) + tokenizer; `adapter.safetensors`
        holds the LoRA weights alone when the stage trained adapters. An HF backbone's config.json and
        tokenizer files go to lm/ (its weights are in model.safetensors)."""
        model = self.model
        if has_lora(model):
            save_file(
                {k: v.contiguous() for k, v in lora_state_dict(model).items()}, str(directory / ADAPTER_FILE)
            )
            model = merge_lora(copy.deepcopy(model))
        save_vlgpt(directory, model, self.tokenizer, stage=self.name, **self.export_meta())

    def export_meta(self) -> dict:
        """Stage-specific entries of the exported config.json."""
        return {}
