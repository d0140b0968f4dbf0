"""The image tokenizer (VL-GPT §3.1): ViT features -> N continuous embeddings.

N learned queries pass through causal transformer blocks that cross-attend to the frozen ViT's
features; the output, projected to the LLM's width, is what the language model reads and, at
generation time, regresses one embedding at a time.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ImageTokenizerConfig
from .layers import QueryBlock, init_weights


class QueryTransformer(nn.Module):
    """Learned queries -> causal self-attention + cross-attention to a context -> outputs."""

    def __init__(self, num_queries: int, width: int, depth: int, heads: int, mlp_ratio: float, context_width: int):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, num_queries, width))
        self.blocks = nn.ModuleList(QueryBlock(width, heads, mlp_ratio, context_width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_weights)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = self.queries.expand(context.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, context, causal=True)
        return self.norm(x)


class ImageTokenizer(nn.Module):
    def __init__(self, config: ImageTokenizerConfig, feature_width: int):
        super().__init__()
        self.config = config
        self.transformer = QueryTransformer(config.num_tokens, config.width, config.depth, config.heads,
                                            config.mlp_ratio, feature_width)
        self.out = nn.Linear(config.width, config.token_dim)
        init_weights(self.out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """ViT features [B, 1 + P, w_v] -> image embeddings [B, N, token_dim]."""
        return self.out(self.transformer(features))
