"""The image tokenizer (VL-GPT §3.1): ViT features -> N continuous embeddings.

N learned queries pass through causal transformer blocks that cross-attend to the frozen ViT's
features; the output, projected to the LLM's width, is what the language model reads and, at
generation time, regresses one embedding at a time.

Locality (`locality=True`, our addition): each query has a home on the image — the N tokens tile
the canvas in raster order — and cross-attention logits get an ALiBi-style bias of
-slope_h * squared distance between the query's home and each patch, one slope per head, the
last head unbiased (global). Learned queries otherwise start attending uniformly and take
hundreds of steps to learn where to look: measured on the small preset, a tokenizer without it
explained 13% of e_v's variance on cells with objects after 100 steps, reproducing the
background and the pooled token but not the objects.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ImageTokenizerConfig
from .layers import QueryBlock, init_weights


def grid_homes(n: int) -> torch.Tensor:
    """Centres of n cells tiling the unit square in raster order, rows <= columns: [n, 2] as (x, y)."""
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    cols = n // rows
    i = torch.arange(n)
    return torch.stack([(i % cols + 0.5) / cols, (i // cols + 0.5) / rows], dim=1)


def locality_bias(
    query_homes: torch.Tensor | None,
    key_homes: torch.Tensor | None,
    heads: int,
    num_queries: int,
    num_keys: int,
    query_offset: int = 0,
    key_offset: int = 0,
) -> torch.Tensor:
    """[heads, num_queries, num_keys] additive bias: -slope_h * |home_q - home_k|^2 where both have homes.

    Homes cover queries query_offset.. and keys key_offset..; the others (pooled, text, CLS) get 0.
    Slopes halve from 64 (about a 1/8-canvas radius) per head; the last head is unbiased.
    """
    bias = torch.zeros(heads, num_queries, num_keys)
    if query_homes is None or key_homes is None:
        return bias
    d2 = torch.cdist(query_homes, key_homes) ** 2  # [nq, nk]
    for h in range(heads - 1):
        rows = slice(query_offset, query_offset + len(query_homes))
        cols = slice(key_offset, key_offset + len(key_homes))
        bias[h, rows, cols] = -64.0 / 4**h * d2
    return bias


def home_pooling(
    query_homes: torch.Tensor,
    key_homes: torch.Tensor,
    num_queries: int,
    num_keys: int,
    query_offset: int = 0,
    key_offset: int = 0,
) -> torch.Tensor:
    """[num_queries, num_keys] averaging weights over the keys that have homes: a query with a home
    takes the keys nearest it (a Gaussian whose width is about half a key cell), one without a home
    (pooled, text) their plain mean."""
    weights = torch.zeros(num_queries, num_keys)
    cols = slice(key_offset, key_offset + len(key_homes))
    weights[:, cols] = 1.0 / len(key_homes)
    rows = slice(query_offset, query_offset + len(query_homes))
    weights[rows, cols] = torch.softmax(-256.0 * torch.cdist(query_homes, key_homes) ** 2, dim=-1)
    return weights


class QueryTransformer(nn.Module):
    """Learned queries -> causal self-attention + cross-attention to a context -> outputs.

    With `seed` weights [num_queries, num_context], each query starts as its learned vector plus a
    projection of the context averaged around its home, so what lies at a query's place reaches it
    through one linear map, and attention refines that instead of having to find it first.
    """

    def __init__(
        self,
        num_queries: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        context_width: int,
        context_bias: torch.Tensor | None = None,
        seed: torch.Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("context_bias", context_bias, persistent=False)
        self.register_buffer("seed_weights", seed, persistent=False)
        self.queries = nn.Parameter(torch.zeros(1, num_queries, width))
        if seed is not None:
            self.seed_norm, self.seed = nn.LayerNorm(context_width), nn.Linear(context_width, width)
        self.blocks = nn.ModuleList(QueryBlock(width, heads, mlp_ratio, context_width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_weights)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = self.queries.expand(context.shape[0], -1, -1)
        if self.seed_weights is not None:
            x = x + self.seed(self.seed_norm(self.seed_weights.to(context.dtype) @ context))
        for block in self.blocks:
            x = block(x, context, causal=True, context_bias=self.context_bias)
        return self.norm(x)


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
                seed = home_pooling(*homes, config.num_tokens, 1 + num_patches, key_offset=1)
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
