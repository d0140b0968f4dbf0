"""The image detokenizer (VL-GPT §3.1): N embeddings -> (z_v, z_t), the decoder's conditions.

Same form as the tokenizer: learned queries (one per e_v token, plus one for e_t) attend causally
to each other and cross-attend to the image embeddings. Trained with
L = lambda_1 MSE(z_v, e_v) + lambda_2 MSE(z_t, e_t) against the frozen CLIP; no pixel loss.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.config import ImageTokenizerConfig
from .layers import init_weights
from .queries import QueryTransformer, grid_homes, home_slots, locality_bias


class ImageDetokenizer(nn.Module):
    def __init__(
        self,
        config: ImageTokenizerConfig,
        num_image_condition_tokens: int,
        embed_dim: int,
        text_tokens: int = 0,
        text_dim: int = 0,
    ):
        """Queries: K image conditions, then one for a pooled e_t (`text_tokens` 0, vlgpt's CLIP) or L
        for a diffusion decoder's text-encoder states. Locality is for vlgpt's grid layout only."""
        super().__init__()
        self.num_image, self.pooled_text = num_image_condition_tokens, text_tokens == 0
        num_queries = num_image_condition_tokens + max(text_tokens, 1)
        bias = seed = None
        if config.locality and self.pooled_text:  # queries: [pooled, G x G regions, text]; keys: the N tokens
            homes = (grid_homes(num_image_condition_tokens - 1), grid_homes(config.num_tokens))
            shape = (num_queries, config.num_tokens)
            bias = locality_bias(*homes, config.heads, *shape, query_offset=1)
            if config.seeded_queries:
                seed = home_slots(*homes, *shape, query_offset=1)
        self.transformer = QueryTransformer(
            num_queries,
            config.width,
            config.detokenizer_depth,
            config.heads,
            config.mlp_ratio,
            config.token_dim,
            bias,
            seed,
        )
        self.out_image = nn.Linear(config.width, embed_dim)
        self.out_text = nn.Linear(config.width, text_dim or embed_dim)
        init_weights(self.out_image)
        init_weights(self.out_text)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, token_dim] -> z_v [B, K, D], z_t [B, D] (pooled) or [B, L, D_t] (a decoder's states)."""
        x = self.transformer(embeddings)
        z_v, z_t = self.out_image(x[:, : self.num_image]), self.out_text(x[:, self.num_image :])
        return z_v, z_t[:, 0] if self.pooled_text else z_t
