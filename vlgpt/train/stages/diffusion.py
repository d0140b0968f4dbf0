"""Stage `diffusion`: the world decoder, a latent diffusion model built from diffusers parts (UNet2D-
ConditionModel, a CLIP text encoder, a CLIP image encoder behind an IP-Adapter) trained on the data's
captions and images in the latent space of the run's frozen `vae` (`models/latent_diffusion.py`).

Writes RUN/diffusion/model/: a diffusers folder in Stable Diffusion's layout, with the adapter under
ip_adapter/ and its default steps and guidance in vlgpt.json, which `vlgpt train decoder --decoder
RUN/diffusion/model` imports into any run, frozen, as the paper imports Stable Diffusion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...eval.decoder_eval import evaluate_decoder, headline
from ...models.diffusers_decoder import DiffusersDecoder
from ...models.latent_diffusion import (
    LatentDiffusion,
    caption_ids,
    decoder_tokenizer,
    encode_latents,
    make_pipeline,
    save_pipeline,
    vae_scale,
)
from ...world.language import loose_caption
from .base import PairStage, Stage, StageInputs, register_stage
from .vae import load_vae


@register_stage
class DiffusionStage(PairStage, Stage):
    name = "diffusion"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(inputs, run)

    def __init__(self, inputs: StageInputs, run: Path):
        super().__init__(inputs)
        self.vae = load_vae(run)
        self.image_size = self.model_config.clip.vision.image_size
        config = self.config = self.model_config.diffusion
        self.tokenizer = decoder_tokenizer(self.source.corpus(), config)
        torch.manual_seed(self.seed)
        self.model = LatentDiffusion(
            config, self.image_size, self.vae.config.latent_channels, vae_scale(self.vae), self.tokenizer
        )

    def batch(self, start: int, size: int) -> dict:
        pixels, captions, _ = self.raw_batch(start, size)
        rng = np.random.default_rng([self.seed, start, 11])
        captions = list(captions)
        for i in range(size):
            # The Shapes world also writes its captions at random levels of detail (its own task):
            # the short prompts people write, and GenEval's, name a few things and leave the rest open.
            if self.source.has_scenes and rng.random() < self.config.loose_captions:
                captions[i] = loose_caption(self.source.scene(start + i), rng)
            if rng.random() < self.config.drop_text:
                captions[i] = ""
        keep_image = torch.from_numpy(rng.random(size) >= self.config.drop_image)
        return {
            "latents": encode_latents(self.vae, pixels),
            "ids": caption_ids(self.tokenizer, captions),
            "pixels": pixels,
            "keep_image": keep_image,
        }

    def loss(self, batch: dict):
        return self.model.loss(batch["latents"], batch["ids"], batch["pixels"], batch["keep_image"])

    def tokens(self, batch: dict) -> int:
        return batch["latents"].shape[0]

    def decoder(self) -> DiffusersDecoder:
        """The model as its saved folder will draw: the pipeline in memory behind `DiffusersDecoder`."""
        pipe = make_pipeline(self.model, self.vae, self.tokenizer)
        return DiffusersDecoder.from_pipeline(pipe, "ip-adapter", self.config.steps, self.config.guidance)

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        if not self.val_source.has_scenes:  # no judge for this data: the denoising loss at fixed noise
            return {"val_mse": self.val_loss()}
        n = max(1, min(self.eval_size, 300) // 6)
        result = evaluate_decoder(
            self.decoder(), n_per_category=n, n_scenes=min(self.eval_size, 300), size=self.image_size
        )
        return headline(result)

    @torch.no_grad()
    def val_loss(self) -> float:
        state = torch.random.get_rng_state()
        torch.manual_seed(1234)  # the same noise and times at every evaluation
        total = 0.0
        try:
            for _, (pixels, captions, _) in self.val_batches(64):
                batch = {
                    "latents": encode_latents(self.vae, pixels, sample=False),
                    "ids": caption_ids(self.tokenizer, captions),
                    "pixels": pixels,
                    "keep_image": torch.ones(len(pixels), dtype=torch.bool),
                }
                total += self.loss(batch)[0].item() * len(pixels)
        finally:
            torch.random.set_rng_state(state)
        return total / max(self.eval_size, 1)

    def export(self, directory: Path) -> None:
        save_pipeline(directory, self.model, self.vae, self.tokenizer)
