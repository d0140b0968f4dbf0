"""The image side of VL-GPT, assembled from a run: image -> N embeddings -> image.

codec = ImageCodec.load("runs/demo")
embeddings = codec.encode([image])          # [B, N, token_dim]: what the LLM reads and writes
images = codec.decode(embeddings)           # detokenizer -> (z_v, z_t) -> pixel decoder
images = codec.decode(embeddings, steps=25, guidance=7.5, seed=1)   # a diffusers decoder (`--decoder`)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.checkpoint import CheckpointError
from ..core.devices import module_device, module_dtype, resolve
from ..data.images import load_image, pixels_from, to_array, to_pil
from ..models.loading import load_clip, load_pixel_decoder, load_tokenizer_pair, trained_image_side
from .generate import GenerationError


class ImageCodec:
    """The codec: the frozen CLIP's image tower, the tokenizer pair and the pixel decoder of a run."""

    def __init__(self, clip, text_tokenizer, pair, decoder):
        self.clip, self.text_tokenizer, self.pair, self.decoder = clip, text_tokenizer, pair, decoder
        self.image_size = clip.config.vision.image_size  # what the tokenizer reads
        # What the decoder draws: a diffusion pipeline's own size, else the tokenizer's.
        self.output_size = getattr(decoder, "image_size", self.image_size)
        self.device, self.dtype = module_device(pair), module_dtype(pair)

    @classmethod
    def load(cls, run: str | Path, device="cpu", dtype="fp32") -> ImageCodec:
        """The run's image side on `device` in `dtype` (devices.resolve: cpu|cuda|mps, fp32|bf16|fp16)."""
        run = Path(run)
        device, dtype = resolve(device, dtype)
        clip_dir, pair_dir = trained_image_side(run)
        clip, text_tokenizer = load_clip(clip_dir, device, dtype)
        pair = load_tokenizer_pair(pair_dir, device, dtype)
        decoder = load_pixel_decoder(run, device, dtype)
        # The detokenizer must predict what this decoder reads: vlgpt's CLIP embeddings for its own
        # decoder, a diffusers pipeline's text states (and adapter input) of exactly these shapes for one.
        wanted = (
            (0, 0)
            if not getattr(decoder, "stochastic", False)
            else (
                decoder.shapes["text_tokens"],
                decoder.shapes["text_dim"],
            )
        )
        if (pair.config.text_tokens, pair.config.text_dim if pair.config.text_tokens else 0) != wanted:
            raise CheckpointError(
                f"{run}: the tokenizer was trained against another decoder's conditions than the one "
                f"this run draws with; train it again: `vlgpt train tokenizer --out {run}`"
            )
        return cls(clip, text_tokenizer, pair, decoder)

    @property
    def num_tokens(self) -> int:
        return self.pair.config.tokenizer.num_tokens

    @property
    def token_dim(self) -> int:
        return self.pair.config.tokenizer.token_dim

    @property
    def stochastic(self) -> bool:
        """True when the decoder samples (a diffusion pipeline): `steps`, `guidance` and `seed` apply."""
        return getattr(self.decoder, "stochastic", False)

    def pixels(self, images: list) -> torch.Tensor:
        """Paths, bytes or PIL images -> [B, 3, S, S] in 0..1 (safe loading, RGB, centre crop)."""
        arrays = [
            to_array(
                load_image(im) if not isinstance(im, np.ndarray) else Image.fromarray(im), self.image_size
            )
            for im in images
        ]
        return pixels_from(arrays).to(self.device, self.dtype)

    @torch.no_grad()
    def encode(self, images: list) -> torch.Tensor:
        """[B, N, token_dim] on the codec's device, in its dtype."""
        return self.pair.tokenizer(self.clip.image_features(self.pixels(images)))

    @torch.no_grad()
    def decode(
        self, embeddings: torch.Tensor, steps: int | None = None, guidance: float | None = None, seed: int = 0
    ) -> list[Image.Image]:
        """N embeddings -> pictures. A diffusion decoder samples with `steps` denoising steps and
        classifier-free guidance `guidance` (its defaults when None) from noise seeded by `seed`;
        vlgpt's own decoder is deterministic, and refuses steps or guidance rather than ignore them."""
        z_v, z_t = self.pair.detokenizer(embeddings.to(self.device, self.dtype))
        if self.stochastic:
            pixels = self.decoder.decode(z_v, z_t, steps, guidance, seed)
        else:
            if steps is not None or guidance is not None:
                raise GenerationError(
                    "steps and guidance apply to a diffusion decoder; this run's pixel decoder is "
                    "deterministic (vlgpt's own). Leave them out, or draw through `--decoder PATH`"
                )
            pixels = self.decoder.decode(z_v, z_t)
        return [to_pil(x) for x in pixels.float().cpu()]

    def reconstruct(self, images: list, **drawing) -> list[Image.Image]:
        return self.decode(self.encode(images), **drawing)
