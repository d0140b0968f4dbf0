"""The image side of VL-GPT, assembled from a run: image -> N embeddings -> image.

codec = ImageCodec.load("runs/demo")
embeddings = codec.encode([image])          # [B, N, token_dim]: what the LLM reads and writes
images = codec.decode(embeddings)           # detokenizer -> (z_v, z_t) -> pixel decoder
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.devices import module_device, module_dtype, resolve
from ..data.images import load_image, pixels_from, to_array, to_pil
from ..models.loading import load_clip, load_pixel_decoder, load_tokenizer_pair, trained_image_side


class ImageCodec:
    """The codec: the frozen CLIP's image tower, the tokenizer pair and the pixel decoder of a run."""

    def __init__(self, clip, text_tokenizer, pair, decoder):
        self.clip, self.text_tokenizer, self.pair, self.decoder = clip, text_tokenizer, pair, decoder
        self.image_size = clip.config.vision.image_size
        self.device, self.dtype = module_device(pair), module_dtype(pair)

    @classmethod
    def load(cls, run: str | Path, device="cpu", dtype="fp32") -> ImageCodec:
        """The run's image side on `device` in `dtype` (devices.resolve: cpu|cuda|mps, fp32|bf16|fp16)."""
        run = Path(run)
        device, dtype = resolve(device, dtype)
        clip_dir, pair_dir = trained_image_side(run)
        clip, text_tokenizer = load_clip(clip_dir, device, dtype)
        return cls(
            clip,
            text_tokenizer,
            load_tokenizer_pair(pair_dir, device, dtype),
            load_pixel_decoder(run, device, dtype),
        )

    @property
    def num_tokens(self) -> int:
        return self.pair.config.tokenizer.num_tokens

    @property
    def token_dim(self) -> int:
        return self.pair.config.tokenizer.token_dim

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
    def decode(self, embeddings: torch.Tensor) -> list[Image.Image]:
        z_v, z_t = self.pair.detokenizer(embeddings.to(self.device, self.dtype))
        return [to_pil(x) for x in self.decoder.decode(z_v, z_t).float().cpu()]

    def reconstruct(self, images: list) -> list[Image.Image]:
        return self.decode(self.encode(images))
