"""A convolutional image encoder: pixels -> a grid of feature vectors, no attention.

Stride-2 3x3 convolutions halve the image down to the patch grid (64 px -> 8 x 8 with 8 px
patches), one stride-1 3x3 convolution mixes each cell with its neighbours, and a learned position
embedding marks where each cell lies. It is the image tower of the default vision stage: trained by
a captioning loss that reaches the pixels (CapPa, Tschannen et al. 2023), it learns to read shape,
colour, size and place within about 50k captions on a CPU, where a ViT of the same width needs
more samples and 1.8x the time per step (docs/BENCHMARKS.md, "Learn to see").

Its output has the ViT's form, [B, 1 + P, width] with a pooled token first (the mean of the cells),
so every later stage reads either tower the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.config import VisionConfig
from .layers import init_weights
from .vit import PIXEL_MEAN, PIXEL_STD, VisionTransformer


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        steps = config.patch_size.bit_length() - 1
        if config.patch_size != 2**steps or steps < 1:
            raise ValueError(
                f"the conv encoder needs a power-of-two patch_size >= 2, got {config.patch_size}"
            )
        if config.mask_ratio > 0:
            raise ValueError("clip.vision.mask_ratio (FLIP) drops ViT patch tokens; it needs vision.kind=vit")
        self.config = config
        w = config.width
        # Channels double per halving and end at the width: 3 -> w/4 -> w/2 -> w for 8 px patches.
        channels = [3] + [max(w // 2 ** (steps - 1 - i), 8) for i in range(steps)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _norm(c_out), nn.GELU()]
        layers += [nn.Conv2d(channels[-1], w, 3, padding=1), _norm(w), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, w))
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.apply(init_weights)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, pixels: torch.Tensor, mask_ratio: float = 0.0) -> torch.Tensor:
        """pixels [B, 3, H, W] in 0..1 -> [B, 1 + P, width]: the mean of the cells, then the cells in
        raster order. (`mask_ratio` exists for the ViT's signature; it must be 0 here.)"""
        x = (pixels - self.pixel_mean) / self.pixel_std
        cells = self.net(x).flatten(2).transpose(1, 2) + self.pos_embed  # [B, P, w]
        return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)


def build_vision(config: VisionConfig) -> nn.Module:
    """The image tower `config.kind` names."""
    towers = {"vit": VisionTransformer, "conv": ConvEncoder}
    if config.kind not in towers:
        raise ValueError(f"unknown clip.vision.kind {config.kind!r}; choose one of {', '.join(towers)}")
    return towers[config.kind](config)
