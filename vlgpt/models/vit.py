"""ViT image encoder: patches -> tokens -> transformer. The CLIP image tower."""

from __future__ import annotations

import torch
from torch import nn

from ..core.config import VisionConfig
from .layers import Block, init_weights

# Inputs are normalised per channel with the Shapes world's statistics (close to natural images').
PIXEL_MEAN = (0.85, 0.83, 0.78)
PIXEL_STD = (0.25, 0.25, 0.28)


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """Stride-2 3x3 convolutions from pixels down to the patch grid, then a 1x1 projection.

    "Early convolutions help transformers see better" (Xiao et al. 2021): overlapping small kernels
    see an edge wherever it falls, where one patchify convolution must learn every position of a
    contour inside its 8x8 window separately. Channels double per halving up to `width`.
    """
    steps = patch_size.bit_length() - 1
    if patch_size != 2**steps:
        raise ValueError(f"conv_stem needs a power-of-two patch_size, got {patch_size}; set conv_stem false")
    channels = [3] + [max(width // 2 ** (steps - 1 - i), 16) for i in range(steps)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.GELU()]
    return nn.Sequential(*layers, nn.Conv2d(channels[-1], width, 1))


class VisionTransformer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        self.config = config
        w = config.width
        self.patch_embed = (
            conv_stem(w, config.patch_size)
            if config.conv_stem
            else nn.Conv2d(3, w, kernel_size=config.patch_size, stride=config.patch_size)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, w))
        self.blocks = nn.ModuleList(Block(w, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(w)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.apply(init_weights)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, pixels: torch.Tensor, mask_ratio: float = 0.0) -> torch.Tensor:
        """pixels [B, 3, H, W] in 0..1 -> hidden states [B, 1 + P, width] (CLS first).

        With `mask_ratio` > 0 (FLIP, Li et al. 2023), a random share of each image's patch tokens is
        dropped after the position embedding: [B, 1 + P', width] with P' = P (1 - mask_ratio)."""
        x = (pixels - self.pixel_mean) / self.pixel_std
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]  # [B, P, w]
        if mask_ratio > 0:
            keep = max(1, round(x.shape[1] * (1 - mask_ratio)))
            kept = torch.rand(x.shape[:2], device=x.device).argsort(dim=1)[:, :keep]  # [B, P']
            x = x.gather(1, kept[..., None].expand(-1, -1, x.shape[2]))
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
