"""The image side trained end to end on pixels: image -> ViT -> tokenizer -> N tokens -> detokenizer ->
(z_v, z_t) -> pixel decoder.

VL-GPT §3.1 trains its tokenizer-detokenizer only to predict a frozen CLIP's embeddings and relies on a
pretrained Stable Diffusion to turn them into pixels. We have neither a CLIP that keeps shape nor a
pretrained decoder: measured on the small preset, a pixel decoder reading CLIP's *own* e_v drew the
right shape 9.5% of the time, so shape is lost in the contrastive ViT, before the tokenizer. Letting
the pixel loss reach the tokens (and our own ViT) makes the N embeddings carry what it takes to redraw
the image — the remedy of VILA-U, SEED and PS-VAE — while the paper's MSE(z_v, e_v) + MSE(z_t, e_t)
stays as a term, so z keeps standing in for the CLIP embeddings. A pretrained `--vision` CLIP stays
frozen: its features are an input, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import PixelDecoderConfig
from .tokenizer_pair import TokenizerPair


class EndToEndCodec(nn.Module):
    """The `decoder` stage's model when `decoder.train_codec` is on: the codec as one trainable chain."""

    RENAMED = {"codec.": "pair."}  # checkpoints written while the pair was named `codec` still resume

    def __init__(
        self,
        config: PixelDecoderConfig,
        pair: TokenizerPair,
        decoder: nn.Module,
        vision: nn.Module | None = None,
        captioner: nn.Module | None = None,
    ):
        super().__init__()
        self.config = config
        self.vision, self.pair, self.decoder = vision, pair, decoder
        self.captioner = captioner  # with caption_weight > 0: captions predicted from the tokens

    def tokens(self, pixels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 3, H, W] -> [B, N, token_dim]; `features` are the frozen ViT's when ours is not trained."""
        if self.vision is not None:
            features = self.vision(pixels)
        return self.pair.tokenizer(features)

    def forward(
        self,
        pixels: torch.Tensor,
        features: torch.Tensor | None,
        e_v: torch.Tensor,
        e_t: torch.Tensor,
        captions: tuple[torch.Tensor, torch.Tensor] | None = None,
        critic=None,
    ) -> tuple[torch.Tensor, dict]:
        """`captions` (ids [B, T], lengths [B]) are needed when the chain has a captioner; `critic`
        is the frozen tower the decoder's perceptual term looks through."""
        tokens = self.tokens(pixels, features)  # [B, N, d]
        extra = {}
        if self.captioner is not None:  # the clean tokens, as the language model reads them
            caption = self.captioner(tokens, *captions)
            extra["caption"] = caption.detach()
        if self.training and self.config.token_noise > 0:
            rms = tokens.detach().pow(2).mean(dim=-1, keepdim=True).sqrt()
            tokens = tokens + self.config.token_noise * rms * torch.randn_like(tokens)
        z_v, z_t = self.pair.detokenizer(tokens)
        pixel, parts = self.decoder.fit(z_v, z_t, pixels, critic)
        mse_v, mse_t = F.mse_loss(z_v, e_v), F.mse_loss(z_t, e_t)
        weights = self.pair.config.tokenizer  # the tokenizer stage's lambda_1, lambda_2 (Table 4's rows)
        loss = pixel + self.config.align_weight * (weights.weight_image * mse_v + weights.weight_text * mse_t)
        if self.captioner is not None:
            loss = loss + self.config.caption_weight * caption
        return loss, {**parts, "mse_v": mse_v.detach(), "mse_t": mse_t.detach(), **extra}

    @torch.no_grad()
    def reconstruct(self, pixels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        z_v, z_t = self.pair.detokenizer(self.tokens(pixels, features))
        return self.decoder.decode(z_v, z_t)
