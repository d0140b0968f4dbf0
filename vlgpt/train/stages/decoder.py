"""Stage `decoder`: the pixel decoder, (z_v, z_t) -> pixels; by default (`decoder.train_codec`) the
whole codec trained end to end on pixels (`models/end_to_end.py`): our ViT, the tokenizer pair and
the decoder, with the paper's alignment to the frozen CLIP kept as a term.

Writes RUN/decoder/model/: the pixel decoder, and the tuned tokenizer pair and CLIP under
tokenizer/ and clip/ when it trained them.

Or `--decoder PATH` (`DecoderImport`): a local, pretrained diffusers text-to-image pipeline becomes the
run's frozen decoder, as VL-GPT draws through Stable Diffusion; nothing is trained, and the
`tokenizer` stage, run after it, regresses that pipeline's own conditions.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...core.checkpoint import CheckpointError, atomic_dir
from ...core.config import PixelDecoderModelConfig, TextConfig
from ...data.images import to_pil
from ...models.captioner import Captioner
from ...models.clip import CLIP
from ...models.diffusers_decoder import DiffusersDecoder, check_decoder_folder
from ...models.end_to_end import EndToEndCodec
from ...models.loading import (
    TUNED_CLIP,
    TUNED_PAIR,
    load_tokenizer_pair,
    save_clip,
    save_diffusers_decoder,
    save_pixel_decoder,
    save_tokenizer_pair,
)
from ...models.pixel_decoder import build_pixel_decoder
from ...world.judge import compare_scenes, judge
from .base import FrozenClipStage, Stage, StageInputs, register_stage


@register_stage
class DecoderStage(FrozenClipStage, Stage):
    name = "decoder"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(
            inputs,
            clip_dir=Path(clip) if clip else run,
            pair_dir=run if (run / "tokenizer" / "model").is_dir() else None,
        )

    def __init__(self, *args, pair_dir: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        vision = self.clip.config.vision
        torch.manual_seed(self.seed)
        self.model = build_pixel_decoder(
            PixelDecoderModelConfig.for_clip(self.model_config.decoder, self.clip.config)
        )
        config = self.model_config.decoder
        self.chain = None
        if pair_dir is not None and not load_tokenizer_pair(pair_dir).config.condition_grid:
            raise CheckpointError(
                f"{pair_dir / 'tokenizer'}: the run's tokenizer regresses a diffusers decoder's "
                "conditions, which vlgpt's own decoder does not read; keep that decoder (`--decoder "
                "PATH`), or train vlgpt's decoder in a run whose tokenizer was trained against its CLIP"
            )
        if config.train_codec:  # tokenizer, detokenizer (and our ViT) learn from the pixel loss too
            if pair_dir is None:
                raise CheckpointError(
                    "decoder.train_codec fine-tunes the run's tokenizer: run `vlgpt train "
                    "tokenizer` first, or pass --set decoder.train_codec=false"
                )
            vision = None
            if isinstance(self.clip, CLIP):  # our own ViT trains on; a pretrained --vision CLIP stays frozen
                vision = copy.deepcopy(self.clip.vision).requires_grad_(True).train()
            pair = load_tokenizer_pair(pair_dir).requires_grad_(True).train()
            captioner = None
            if config.caption_weight > 0:  # discarded after training: a training aid, like CLIP's
                text = getattr(self.clip.config, "text", None) or TextConfig(self.text_tokenizer.vocab_size)
                captioner = Captioner(text, pair.config.tokenizer.token_dim, self.clip.config.caption_depth)
            self.model = self.chain = EndToEndCodec(config, pair, self.model, vision, captioner)
            self.pair = None
            return
        fraction = config.detokenized_fraction
        # The run's frozen tokenizer-detokenizer, when the recipe mixes its outputs into training.
        self.pair = load_tokenizer_pair(pair_dir) if fraction > 0 and pair_dir is not None else None
        if fraction > 0 and self.pair is None:
            raise CheckpointError(
                "decoder.detokenized_fraction > 0 needs a trained tokenizer: run `vlgpt train "
                "tokenizer` first, or pass --set decoder.detokenized_fraction=0"
            )

    def batch(self, start: int, size: int) -> dict:
        batch = super().batch(start, size)
        if self.pair is not None:
            # Replace a fixed share of each batch's (e_v, e_t) by the detokenizer's (z_v, z_t), so the
            # decoder learns the conditions it will see at inference (deterministic per batch).
            k = round(self.model_config.decoder.detokenized_fraction * size)
            with torch.no_grad():
                z_v, z_t = self.pair.detokenizer(self.pair.tokenizer(batch["features"][:k]))
            batch["e_v"] = torch.cat([z_v, batch["e_v"][k:]])
            batch["e_t"] = torch.cat([z_t, batch["e_t"][k:]])
        return batch

    def loss(self, batch: dict):
        if self.chain is not None:
            features = None if self.chain.vision is not None else batch["features"]
            captions = None
            if self.chain.captioner is not None:
                context = self.chain.captioner.pos_embed.shape[1]
                captions = self.text_tokenizer.batch(batch["captions"], context)
            return self.chain(batch["pixels"], features, batch["e_v"], batch["e_t"], captions, self.critic)
        return self.model.loss(batch["e_v"], batch["e_t"], batch["pixels"], self.critic)

    def critic(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen tower's grid features of `pixels`: what the perceptual term compares."""
        return self.clip.image_features(pixels)[:, 1:]

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        l1, agreement = 0.0, []
        for start, (pixels, captions, _) in self.val_batches():
            batch = self.targets(pixels, captions)
            if self.chain is not None:
                images = self.chain.reconstruct(pixels, batch["features"])
            else:
                if self.pair is not None:  # score what inference will do: decode the detokenizer's output
                    batch["e_v"], batch["e_t"] = self.pair.detokenizer(self.pair.tokenizer(batch["features"]))
                images = self.model.decode(batch["e_v"], batch["e_t"])
            l1 += torch.nn.functional.l1_loss(images, pixels).item() * len(pixels)
            if self.val_source.has_scenes:
                agreement += [
                    compare_scenes(judge(to_pil(img)), self.val_source.scene(start + i))
                    for i, img in enumerate(images)
                ]
        result = {"l1": l1 / max(self.eval_size, 1)}
        result.update(agreement_summary(agreement, prefix="judge_"))
        return result

    def export(self, directory: Path) -> None:
        decoder = self.chain.decoder if self.chain is not None else self.model
        save_pixel_decoder(directory, decoder)
        if self.chain is None:
            return
        (directory / TUNED_PAIR).mkdir()
        save_tokenizer_pair(directory / TUNED_PAIR, self.chain.pair)
        if self.chain.vision is not None:  # the run's CLIP with the tuned image tower: the codec's encoder
            tuned = copy.deepcopy(self.clip)
            tuned.vision.load_state_dict(self.chain.vision.state_dict())
            (directory / TUNED_CLIP).mkdir()
            save_clip(directory / TUNED_CLIP, tuned, self.text_tokenizer)


class DecoderImport:
    """`vlgpt train decoder --decoder PATH`: a local diffusers pipeline, checked (no remote code,
    safetensors only, every part present) and copied into RUN/decoder/model/diffusers/, so the run no
    longer needs PATH. Import it before the `tokenizer` stage, whose targets it defines."""

    name = "decoder"

    def __init__(self, path: str | Path):
        self.source = Path(path)
        check_decoder_folder(self.source)  # before anything is loaded or written
        self.decoder = DiffusersDecoder(self.source)

    def run(self, out: Path) -> dict:
        """Writes out/model/; returns the pipeline's sizes and one drawing's seconds at its defaults'
        guidance with 2 steps (a smoke test that the whole pipeline runs here)."""
        decoder = self.decoder
        shapes = decoder.shapes
        z_t = decoder.text_conditions(["a picture"])
        z_v = decoder.image_conditions(torch.zeros(1, 3, 8, 8))
        start = time.perf_counter()
        image = decoder.decode(z_v, z_t, steps=2)
        metrics = {
            "step": 0,
            "image_size": decoder.image_size,
            **shapes,
            "seconds_per_2_step_drawing": round(time.perf_counter() - start, 3),
        }
        if not torch.isfinite(image).all():
            raise CheckpointError(f"{self.source}: the pipeline drew non-finite pixels")
        with atomic_dir(out / "model") as staging:
            save_diffusers_decoder(staging, decoder, self.source)
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics


def agreement_summary(results: list[dict], prefix: str = "") -> dict:
    if not results:
        return {}
    keys = ("count", "colors", "shapes", "sizes", "kinds", "relations", "exact")
    return {prefix + k: float(np.mean([r[k] for r in results])) for k in keys}
