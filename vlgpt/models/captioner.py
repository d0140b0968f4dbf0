"""A small caption decoder on the CLIP image tower: a captioning loss beside InfoNCE (CoCa, CapPa).

InfoNCE is satisfied by whatever features tell a batch's captions apart, and a contrastive encoder
learns the easy ones (colour, place) and suppresses the rest (Chen et al. 2021; bag-of-words CLIP,
Yuksekgonul et al. 2023). Predicting every word of the caption from the patch features asks the
image tower for every attribute a caption names, shape included. Measured on the small preset:
docs/BENCHMARKS.md, "Issue 12, fourth round".

Teacher-forced and causal: a learned start vector, then the caption's tokens, each position
cross-attending to the ViT's hidden states. Only the `clip` stage uses it (a training aid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextConfig
from .layers import QueryBlock, init_weights


class Captioner(nn.Module):
    def __init__(self, text: TextConfig, image_width: int, depth: int):
        super().__init__()
        self.token_embed = nn.Embedding(text.vocab_size, text.width)
        self.start = nn.Parameter(torch.zeros(1, 1, text.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, text.context_length, text.width))
        self.blocks = nn.ModuleList(
            QueryBlock(text.width, text.heads, text.mlp_ratio, image_width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(text.width)
        self.apply(init_weights)
        nn.init.normal_(self.pos_embed, std=0.01)
        nn.init.normal_(self.start, std=0.02)

    def forward(self, features: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of the captions `ids` [B, T] (right-padded, `lengths` [B])
        given the image tower's hidden states `features` [B, 1 + P, image_width]."""
        B, T = ids.shape
        x = torch.cat([self.start.expand(B, -1, -1), self.token_embed(ids[:, :-1])], dim=1)
        x = x + self.pos_embed[:, :T]
        for block in self.blocks:
            x = block(x, features, causal=True)
        logits = self.norm(x) @ self.token_embed.weight.T  # [B, T, vocab], tied to the input embedding
        keep = torch.arange(T, device=ids.device)[None] < lengths[:, None]
        return F.cross_entropy(logits[keep], ids[keep])
