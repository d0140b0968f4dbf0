"""Causal text transformer pooled at the end-of-text token: the CLIP text tower."""

from __future__ import annotations

import torch
from torch import nn

from ..core.config import TextConfig
from .layers import Block, init_weights


class TextTransformer(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.token_embed = nn.Embedding(config.vocab_size, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.context_length, config.width))
        self.blocks = nn.ModuleList(
            Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.width)
        self.apply(init_weights)
        nn.init.normal_(self.pos_embed, std=0.01)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (right-padded), lengths [B] -> pooled [B, width] at each text's last token."""
        T = ids.shape[1]
        if T > self.config.context_length:
            raise ValueError(f"text of {T} tokens exceeds the context of {self.config.context_length}")
        x = self.token_embed(ids) + self.pos_embed[:, :T]
        for block in self.blocks:
            x = block(x, causal=True)  # causal: padding after the end never reaches the pooled token
        x = self.norm(x)
        return x[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
