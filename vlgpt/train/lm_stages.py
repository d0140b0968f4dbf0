"""The VL-GPT stages: `pretrain` (image-text pairs both ways, interleaved documents) and
`instruct` (Shapes conversations: describe, VQA, draw, edit, multi-turn, in-context episodes).

Both read images through the run's frozen tokenizer (N embeddings each). Pretraining trains every
token and every image embedding that follows some text (an image at the very start has nothing to be
predicted from); instruction tuning trains assistant turns only (VL-GPT §3.2).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..core.checkpoint import CheckpointError, read_config, save_model
from ..core.config import ConfigError, to_dict
from ..core.hf_lm import LM_DIR, load_local_lm, save_lm
from ..core.prompts import DESCRIBE, draw_prompt, t2i_prompt
from ..data import sequences as S
from ..data.conversations import ConversationSource
from ..data.formats import DatasetError
from ..data.sources import WORLD, make_source
from ..inference.image_codec import ImageCodecPipeline
from ..models.hf_backbone import HFBackbone
from ..models.loading import load_vlgpt
from ..models.lora import add_lora, has_lora, lora_state_dict, merge_lora
from ..models.vlgpt import VLGPT, VLGPTConfig
from ..world import language
from ..world.dataset import ShapesWorld
from ..world.render import render
from ..world.scene import Scene
from .registry import StageInputs, register_stage

ADAPTER_FILE = "adapter.safetensors"


class LMStage:
    """Shared plumbing: the frozen codec, the tokenizer, batching of segment lists."""

    name = "lm"
    may_leave_parameters_unused = True  # a batch without image targets leaves the regression head unused

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
        self.codec = ImageCodecPipeline.load(run)
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
        fit_head = hasattr(self.model.regression_head, "fit_scale")
        if init_from is None and (
            fit_head or model_config.lm.normalize_inputs or model_config.lm.whiten_inputs
        ):
            # Measure the codec's embeddings once: their scale for a generative head, their
            # per-channel statistics for the input standardisation.
            probe = make_source(data if self.custom else WORLD, size, seed, part="train")
            embeddings = torch.cat(self.encode_images([probe.get(i)[0] for i in range(64)]))
            if fit_head:
                self.model.regression_head.fit_scale(embeddings)
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
        from ..eval.quick import quick_eval

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
        config = model.config
        meta = {
            "kind": "vlgpt",
            "stage": self.name,
            "vocab_size": config.vocab_size,
            "num_image_tokens": config.num_image_tokens,
            "image_token_dim": config.image_token_dim,
            "lm": to_dict(config.lm),
        }
        if isinstance(model.transformer, HFBackbone):  # its config and tokenizer in lm/: no --lm to load
            meta.update(backbone="hf", lm={"regression_weight": config.lm.regression_weight})
            save_lm(directory / LM_DIR, model.transformer.model, self.tokenizer)
        else:
            self.tokenizer.save(directory)
        save_model(directory, model, {**meta, **self.export_meta()})

    def export_meta(self) -> dict:
        """Stage-specific entries of the exported config.json."""
        return {}


@register_stage
class PretrainStage(LMStage):
    """Image-caption pairs both ways and interleaved documents (the Shapes world), or the image-caption
    pairs of a dataset folder or shards (`--data`; both directions, no layouts or documents)."""

    name = "pretrain"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.custom:
            self.source, self.val_source = self.dataset_sources(make_source)

    def sample(self, index: int, part: str = "train") -> tuple[list[S.Segment], list]:
        rng = np.random.default_rng([self.seed, index, 11])
        if self.custom:
            if part == "train":
                return pair_sample(self.source, index, rng, self.uncond_prob)
            return pair_sample(self.val_source, index, rng)
        if part == "val":
            return world_pretrain_sample(self.val_world, index, rng, layout_plan=self.layout_plan)
        return world_pretrain_sample(self.world, index, rng, self.uncond_prob, self.layout_plan)

    def export_meta(self) -> dict:
        # What instruct replays (`--replay`) to keep what pretraining taught: this stage's data, and the
        # part of it held out for validation.
        data = (
            self.data
            if self.data == WORLD or not Path(self.data).exists()
            else str(Path(self.data).resolve())
        )
        return {"pretrain_data": {"data": data, "holdout": self.eval_size if self.val_data is None else 0}}


def unconditional() -> list[S.Segment]:
    """[BOS] [IMG] e_1 ... e_N [/IMG] [EOS]: a text-to-image pair with its text dropped."""
    return [S.Segment("image", 0, True), S.eos()]


def pair_sample(source, index: int, rng, uncond_prob: float = 0.0) -> tuple[list[S.Segment], list]:
    """An image-caption pair of a dataset, in either direction at random (VL-GPT §3.2's pre-training).
    A share `uncond_prob` of the text-to-image ones drop their text: the unconditional draw that
    classifier-free guidance steers away from (`SamplingConfig.guidance`)."""
    pixels, caption, _ = source.get(index)
    if rng.random() < 0.5:  # image then caption
        return [S.Segment("image", 0, False), S.text(caption, True), S.eos()], [pixels]
    if uncond_prob > 0 and rng.random() < uncond_prob:
        return unconditional(), [pixels]
    return [S.text(t2i_prompt(caption), True), S.Segment("image", 0, True), S.eos()], [pixels]


def world_pretrain_sample(
    world: ShapesWorld, index: int, rng, uncond_prob: float = 0.0, layout_plan: bool = True
) -> tuple[list[S.Segment], list[Scene]]:
    scene = world.scene(index)
    caption = language.captions(scene, rng)[0]
    kind = rng.random()
    if kind < 0.4:  # image then caption
        return [S.Segment("image", 0, False), S.text(caption, True), S.eos()], [scene]
    if kind < 0.85:  # caption then layout then image: "An image of <caption>. Layout: ... [IMG] ... [/IMG]"
        if uncond_prob > 0 and rng.random() < uncond_prob:
            return unconditional(), [scene]
        plan = [S.text(" " + language.layout(scene), True)] if layout_plan else []
        return [S.text(t2i_prompt(caption), True), *plan, S.Segment("image", 0, True), S.eos()], [scene]
    doc = world.document(index)  # interleaved: a scene changed step by step
    segments, scenes = [], []
    for part in doc:
        if part["type"] == "text":
            segments.append(S.text(part["text"], True))
        else:
            segments.append(S.Segment("image", len(scenes), True))
            scenes.append(Scene.from_dict(part["scene"]))
    return segments + [S.eos()], scenes


# Instruction kinds and their shares: a look at one image (its caption and questions about it, as
# turns of one conversation), a drawing, an edit, a few-shot episode.
INSTRUCT_KINDS = {"look": 0.45, "draw": 0.2, "edit": 0.2, "episode": 0.15}


def parse_mix(text: str) -> dict[str, float]:
    """'look=0.6,draw=0.4' -> {"look": 0.6, "draw": 0.4}, normalised; '' -> INSTRUCT_KINDS."""
    if not text.strip():
        return dict(INSTRUCT_KINDS)
    mix = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in INSTRUCT_KINDS:
            raise ConfigError(
                f"--world-mix: unknown kind {name!r}; choose from {', '.join(INSTRUCT_KINDS)} "
                "(e.g. look=0.6,draw=0.2,edit=0.1,episode=0.1)"
            )
        try:
            mix[name] = float(value)
        except ValueError:
            raise ConfigError(f"--world-mix: {part.strip()!r} needs a number after '='") from None
        if mix[name] < 0:
            raise ConfigError(f"--world-mix: the share of {name} is negative")
    total = sum(mix.values())
    if total <= 0:
        raise ConfigError("--world-mix: the shares add up to 0")
    return {name: share / total for name, share in mix.items()}


def look_turns(row: dict, rng) -> list[dict]:
    """A random one to all of a world row's readings of its image, in random order: the caption
    ("Describe the image.") and one question of each kind, each a {question, answer} turn.

    One image serves several turns, as LLaVA's conversations do: the image costs the transformer its
    N positions once, and each turn adds a dozen, so a conversation teaches three or four readings
    for the price of two single ones. (The row lists its questions in a fixed order; taking the
    first ones left relation and size questions untrained.)"""
    turns = [{"kind": "describe", "question": DESCRIBE, "answer": row["caption"]}, *row["questions"]]
    order = rng.permutation(len(turns))[: int(rng.integers(1, len(turns) + 1))]
    return [turns[int(i)] for i in order]


@register_stage
class InstructStage(LMStage):
    name = "instruct"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return super().from_run(run, inputs, train, clip, replay=train.replay, mix=train.world_mix)

    def __init__(self, *args, replay: float = 0.0, mix: str = "", **kwargs):
        self.kinds = parse_mix(mix)  # before any sample is drawn
        run = kwargs.get("run")
        kwargs.setdefault("init_from", Path(run) / "pretrain" / "model" if run else None)
        if kwargs["init_from"] is not None and not Path(kwargs["init_from"]).is_dir():
            kwargs["init_from"] = None  # instruction tuning from scratch (no pretrain stage in this run)
        super().__init__(*args, **kwargs)
        if self.custom:
            self.source, self.val_source = self.dataset_sources(ConversationSource)
        if not 0 <= replay < 1:
            raise ConfigError(f"--replay must be in [0, 1), got {replay}")
        self.replay = self.replay_source(kwargs["init_from"]) if replay > 0 else None
        self.replay_fraction = replay

    def replay_source(self, pretrained: Path | None):
        """The pretraining data, when it differs from this stage's: instruction tuning on chat data
        that never draws erased drawing (every prompt drew the same image after full fine-tuning on a
        conversations-only dataset); replaying a share of pretraining pairs keeps it."""
        if pretrained is None:
            return None
        recorded = read_config(pretrained).get("pretrain_data")
        if recorded is None or recorded["data"] == self.data:
            return None
        if recorded["data"] == WORLD:
            return WORLD
        try:
            return make_source(
                recorded["data"], self.codec.image_size, self.seed, part="train", holdout=recorded["holdout"]
            )
        except DatasetError as error:
            raise DatasetError(
                f"instruct replays the pretraining pairs, but: {error}; or pass --replay 0"
            ) from None

    def sample(self, index: int, part: str = "train") -> tuple[list[S.Segment], list]:
        if self.replay is not None and part == "train":
            rng = np.random.default_rng([self.seed, index, 17])
            if rng.random() < self.replay_fraction:
                if self.replay == WORLD:
                    return world_pretrain_sample(self.world, index, rng, self.uncond_prob, self.layout_plan)
                return pair_sample(self.replay, index, rng, self.uncond_prob)
        if self.custom:  # labels from the conversation's own spans: assistant turns only
            messages, images = (self.source if part == "train" else self.val_source).get(index)
            return S.chat_segments(messages, list(range(len(images)))), images
        rng = np.random.default_rng([self.seed, index, 13])
        world = self.world if part == "train" else self.val_world
        row = world[index]
        scene = Scene.from_dict(row["scene"])
        kind = str(rng.choice(list(self.kinds), p=list(self.kinds.values())))
        user = lambda *parts: {"role": "user", "content": list(parts)}
        bot = lambda *parts: {"role": "assistant", "content": list(parts)}
        txt = lambda t: {"type": "text", "text": t}
        img = {"type": "image"}
        scenes = [scene]
        if kind == "look":
            turns = look_turns(row, rng)
            messages = [user(img, txt(turns[0]["question"])), bot(txt(turns[0]["answer"]))]
            for turn in turns[1:]:
                messages += [user(txt(turn["question"])), bot(txt(turn["answer"]))]
        elif kind == "draw" or row["edit"] is None:
            plan = [txt(language.layout(scene))] if self.layout_plan else []
            messages = [user(txt(draw_prompt(row["references"][-1]))), bot(*plan, img)]
        elif kind == "edit":
            messages = [user(img, txt(row["edit"]["instruction"])), bot(img)]
            scenes.append(Scene.from_dict(row["edit"]["target"]))
        else:
            episode = world.episode(index, int(rng.integers(0, 5)))
            messages, scenes = [], []
            for demo in episode["demos"]:
                messages += [user(img, txt(episode["prompt"])), bot(txt(demo["answer"]))]
                scenes.append(Scene.from_dict(demo["scene"]))
            messages += [user(img, txt(episode["prompt"])), bot(txt(episode["answer"]))]
            scenes.append(Scene.from_dict(episode["query"]))
        placeholder = list(range(len(scenes)))
        segments = S.chat_segments(messages, placeholder)  # image values are scene indices for now
        return segments, scenes
