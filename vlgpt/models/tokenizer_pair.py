"""The image tokenizer and detokenizer as one model: what the `tokenizer` stage trains (VL-GPT §3.1).

ViT features -> N embeddings (the tokenizer) -> (z_v, z_t) (the detokenizer), supervised by the
frozen CLIP's e_v and e_t. `vlgpt/inference/image_codec.py` assembles it with the CLIP and the pixel decoder
into the whole image side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import TokenizerPairConfig
from .image_detokenizer import ImageDetokenizer
from .image_tokenizer import ImageTokenizer


class TokenizerPair(nn.Module):
    """Tokenizer and detokenizer trained together: the `tokenizer` stage's model."""

    def __init__(self, config: TokenizerPairConfig):
        super().__init__()
        self.config = config
        self.tokenizer = ImageTokenizer(config.tokenizer, config.feature_width, config.num_patches)
        self.detokenizer = ImageDetokenizer(
            config.tokenizer,
            config.num_condition_tokens,
            config.embed_dim,
            config.text_tokens,
            config.text_dim,
        )

    def forward(self, features: torch.Tensor, e_v: torch.Tensor, e_t: torch.Tensor):
        """Loss lambda_1 MSE(z_v, e_v) + lambda_2 MSE(z_t, e_t), with both terms for logging."""
        z_v, z_t = self.detokenizer(self.tokenizer(features))
        # A decoder without an image-prompt adapter has no e_v: only z_t conditions its drawing.
        loss_v = F.mse_loss(z_v, e_v) if z_v.shape[1] else z_v.new_zeros(())
        loss_t = F.mse_loss(z_t, e_t)
        weights = self.config.tokenizer
        loss = weights.weight_image * loss_v + weights.weight_text * loss_t
        return loss, {"mse_v": loss_v.detach(), "mse_t": loss_t.detach()}
