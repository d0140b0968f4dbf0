"""The image tokenizer (VL-GPT §3.1): ViT features -> N continuous embeddings.

N learned queries pass through causal transformer blocks that cross-attend to the frozen ViT's
features (`queries.QueryTransformer`, with each query's home on the image and the locality bias
described there); the output, projected to the LLM's width, is what the language model reads and,
at generation time, predicts one embedding at a time.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.config import ImageTokenizerConfig
from .layers import init_weights
from .queries import QueryTransformer, grid_homes, home_slots, locality_bias


class ImageTokenizer(nn.Module):
    def __init__(self, config: ImageTokenizerConfig, feature_width: int, num_patches: int | None = None):
        super().__init__()
        self.config = config
        bias = seed = None
        if config.locality and num_patches:  # features are [CLS, patches on a g x g grid]
            g = math.isqrt(num_patches)
            homes = (grid_homes(config.num_tokens), grid_homes(g * g))
            bias = locality_bias(*homes, config.heads, config.num_tokens, 1 + num_patches, key_offset=1)
            if config.seeded_queries:
                seed = home_slots(*homes, config.num_tokens, 1 + num_patches, key_offset=1)
        self.transformer = QueryTransformer(
            config.num_tokens,
            config.width,
            config.depth,
            config.heads,
            config.mlp_ratio,
            feature_width,
            bias,
            seed,
        )
        self.out = nn.Linear(config.width, config.token_dim)
        init_weights(self.out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """ViT features [B, 1 + P, w_v] -> image embeddings [B, N, token_dim]."""
        return self.out(self.transformer(features))
