"""CLIP: a ViT and a text transformer trained contrastively (InfoNCE, or SigLIP's sigmoid loss;
learnable temperature).

VL-GPT §3.1 supervises its detokenizer with a frozen CLIP: e_v, the image embedding, and e_t, the
text embedding of the image's caption. Here `image_embeddings` gives e_v as the pooled image
embedding followed by the projected patch tokens average-pooled to a coarse G x G grid
([1 + G^2, D]: what the image shows, and roughly where), and `encode_text` gives e_t. Both are
L2-normalised then scaled by sqrt(D), so each element has unit RMS and the MSE losses downstream do
not depend on D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import ClipConfig
from .captioner import Captioner
from .conv_encoder import build_vision
from .layers import init_weights
from .text import TextTransformer


def scaled_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1) * math.sqrt(x.shape[-1])


class CLIP(nn.Module):
    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.vision = build_vision(config.vision)
        self.text = TextTransformer(config.text)
        self.image_proj = nn.Linear(config.vision.width, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(config.text.width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        if config.loss not in ("infonce", "sigmoid"):
            raise ValueError(f"unknown clip.loss {config.loss!r}; choose infonce or sigmoid")
        if config.loss == "sigmoid":  # SigLIP's bias, -10 at the start: most pairs are negatives
            self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        init_weights(self.image_proj)
        init_weights(self.text_proj)
        self.captioner = (
            Captioner(
                config.text,
                config.vision.width,
                config.caption_depth,
                config.caption_parallel,
                config.caption_backward,
            )
            if config.caption_weight > 0
            else None
        )

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tokenizer's input: ViT hidden states [B, 1 + P, vision.width]."""
        return self.vision(pixels)

    def image_embeddings(self, pixels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """e_v: [B, 1 + G^2, D], each token scaled-normalised."""
        features = self.vision(pixels) if features is None else features
        tokens = self.image_proj(features)  # [B, 1 + P, D]
        B, _, D = tokens.shape
        g = self.config.vision.grid
        grid = tokens[:, 1:].transpose(1, 2).reshape(B, D, g, g)
        regions = (
            F.adaptive_avg_pool2d(grid, self.config.condition_grid).flatten(2).transpose(1, 2)
        )  # [B, G^2, D]
        return scaled_normalize(torch.cat([tokens.mean(dim=1, keepdim=True), regions], dim=1))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm contrastive image embedding [B, D]: the mean over all tokens.

        Mean pooling trains much faster than the CLS token alone for a small ViT learnt from
        scratch: every patch gets gradient from the contrastive loss from the first step.
        """
        return self.pool_image(self.vision(pixels))

    def pool_image(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(features).mean(dim=1), dim=-1)

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unit-norm contrastive text embedding [B, D]; e_t = this x sqrt(D)."""
        return F.normalize(self.text_proj(self.text(ids, lengths)), dim=-1)

    def embed_captions(self, captions: list[str], text_tokenizer) -> torch.Tensor:
        """`encode_text` of captions tokenized by the run's tokenizer (HFClip has the same method)."""
        ids, lengths = text_tokenizer.batch(captions, self.config.text.context_length)
        return self.encode_text(ids, lengths)

    def forward(
        self,
        pixels: torch.Tensor,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        groups: torch.Tensor | None = None,
        parts: dict | None = None,
        negatives: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`contrastive_weight` x the symmetric InfoNCE loss plus `caption_weight` x the captioning
        loss, and the [B, B] image-to-text logits; `parts`, when given, receives each term detached.

        `groups` [B] marks samples that describe the same content (two scenes whose captions say
        the same thing): they count as positives of each other rather than as false negatives.
        `negatives` (ids, lengths, valid [B]) are hard negative captions (`data/negatives.py`): extra
        texts every image is contrasted with in the image-to-text direction; invalid ones are left out.
        """
        features = self.vision(pixels, self.config.vision.mask_ratio if self.training else 0.0)
        image = self.pool_image(features.detach() if self.config.contrastive_detach else features)
        text = self.encode_text(ids, lengths)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        logits = scale * image @ text.T  # [B, B]
        if groups is None:
            groups = torch.arange(len(image), device=image.device)
        positives = (groups[:, None] == groups[None, :]).float()
        targets = positives / positives.sum(1, keepdim=True)
        image_to_text = logits
        if negatives is not None and bool(negatives[2].any()):
            neg_ids, neg_lengths, valid = negatives
            hard = scale * image @ self.encode_text(neg_ids[valid], neg_lengths[valid]).T  # [B, M]
            image_to_text = torch.cat([logits, hard], dim=1)
            targets_i2t = torch.cat([targets, targets.new_zeros(hard.shape)], dim=1)
        else:
            targets_i2t = targets
        if self.config.loss == "sigmoid":  # SigLIP: -log sigmoid(+-(s x.y + b)) summed over pairs, / B
            signs = 2 * (targets_i2t > 0).float() - 1
            loss = -F.logsigmoid(signs * (image_to_text + self.logit_bias)).sum() / len(image)
        else:
            loss = 0.5 * (F.cross_entropy(image_to_text, targets_i2t) + F.cross_entropy(logits.T, targets))
        if self.captioner is not None:
            caption = self.captioner(features, ids, lengths)
            if parts is not None:
                parts.update(infonce=loss.detach(), caption_ce=caption.detach())
            loss = self.config.contrastive_weight * loss + self.config.caption_weight * caption
        return loss, logits
