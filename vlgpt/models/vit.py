"""ViT image encoder: patches -> tokens -> transformer. The CLIP image tower."""

from __future__ import annotations

import torch
from torch import nn

from ..config import VisionConfig
from .layers import Block, init_weights

# Inputs are normalised per channel with the Shapes world's statistics (close to natural images').
PIXEL_MEAN = (0.85, 0.83, 0.78)
PIXEL_STD = (0.25, 0.25, 0.28)


class VisionTransformer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
        self.config = config
        w = config.width
        self.patch_embed = nn.Conv2d(3, w, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, w))
        self.blocks = nn.ModuleList(Block(w, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(w)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.apply(init_weights)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in 0..1 -> hidden states [B, 1 + P, width] (CLS first)."""
        x = (pixels - self.pixel_mean) / self.pixel_std
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, P, w]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
