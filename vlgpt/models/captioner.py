"""A small caption decoder on the CLIP image tower: a captioning loss beside InfoNCE (CoCa, CapPa).

InfoNCE is satisfied by whatever features tell a batch's captions apart, and a contrastive encoder
learns the easy ones (colour, place) and suppresses the rest (Chen et al. 2021; bag-of-words CLIP,
Yuksekgonul et al. 2023). Predicting every word of the caption from the patch features asks the
image tower for every attribute a caption names, shape included. Measured on the small preset:
docs/BENCHMARKS.md, "Issue 12, fourth round".

Teacher-forced and causal: a learned start vector, then the caption's tokens, each position
cross-attending to the image tower's hidden states. The `clip` stage trains it beside the tower and
reads its greedy captions (`generate`) to report how well the tower sees. With `parallel` > 0, that
share of the captions is predicted in parallel, as CapPa does (Tschannen et al. 2023): every input is
one learned mask vector, so no word can be guessed from the words before it and the tower must hold
them all. With `backward` > 0, that share is read right to left, as VirTex's bicaptioning does (Desai
& Johnson 2021): English names a colour before the shape it belongs to, so a forward decoder only
ever finds an object by its colour; read backwards, it must find one by its shape to say its colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import TextConfig
from .layers import QueryBlock, init_weights


class Captioner(nn.Module):
    def __init__(
        self, text: TextConfig, image_width: int, depth: int, parallel: float = 0.0, backward: float = 0.0
    ):
        super().__init__()
        self.parallel, self.backward = parallel, backward
        self.token_embed = nn.Embedding(text.vocab_size, text.width)
        self.start = nn.Parameter(torch.zeros(1, 1, text.width))
        self.mask = nn.Parameter(torch.zeros(1, 1, text.width)) if parallel > 0 else None
        # VirTex's bicaptioning: a start vector of its own tells the decoder a caption runs backwards.
        self.start_backward = nn.Parameter(torch.zeros(1, 1, text.width)) if backward > 0 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, text.context_length, text.width))
        self.blocks = nn.ModuleList(
            QueryBlock(text.width, text.heads, text.mlp_ratio, image_width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(text.width)
        self.apply(init_weights)
        nn.init.normal_(self.pos_embed, std=0.01)
        nn.init.normal_(self.start, std=0.02)
        if self.mask is not None:
            nn.init.normal_(self.mask, std=0.02)
        if self.start_backward is not None:
            nn.init.normal_(self.start_backward, std=0.02)

    def forward(self, features: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of the captions `ids` [B, T] (right-padded, `lengths` [B])
        given the image tower's hidden states `features` [B, 1 + P, image_width]. In training, a
        `backward` share of the captions is read right to left (its [EOS] still last)."""
        reverse = None
        if self.start_backward is not None and self.training:
            reverse = torch.rand(ids.shape[0], device=ids.device) < self.backward
            ids = torch.where(reverse[:, None], reversed_words(ids, lengths), ids)
        logits = self.logits(features, ids, reverse)  # [B, T, vocab]
        keep = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
        return F.cross_entropy(logits[keep], ids[keep])

    def logits(
        self, features: torch.Tensor, ids: torch.Tensor, reverse: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced predictions [B, T, vocab] of each caption token from the ones before it (in
        training, a `parallel` share of the rows from none of them); rows marked in `reverse` [B] start
        from the backward start vector."""
        B, T = ids.shape
        start = self.start.expand(B, -1, -1)
        if reverse is not None:
            start = torch.where(reverse[:, None, None], self.start_backward.expand(B, -1, -1), start)
        x = torch.cat([start, self.token_embed(ids[:, :-1])], dim=1)
        if self.mask is not None and self.training:  # CapPa: these rows see no words, only positions
            parallel = torch.rand(B, 1, 1, device=ids.device) < self.parallel
            x = torch.where(parallel, self.mask.expand(B, T, -1), x)
        x = x + self.pos_embed[:, :T]
        for block in self.blocks:
            x = block(x, features, causal=True)
        return self.norm(x) @ self.token_embed.weight.T  # tied to the input embedding

    @torch.no_grad()
    def generate(self, features: torch.Tensor, eos_id: int, max_len: int | None = None) -> list[list[int]]:
        """Greedy captions of a batch of images: token ids [B][<= max_len], each cut at its [EOS]."""
        B = features.shape[0]
        max_len = min(max_len or self.pos_embed.shape[1], self.pos_embed.shape[1])
        x = self.start.expand(B, -1, -1)
        ids = torch.zeros(B, 0, dtype=torch.long, device=features.device)
        done = torch.zeros(B, dtype=torch.bool, device=features.device)
        for t in range(max_len):
            h = x + self.pos_embed[:, : t + 1]
            for block in self.blocks:
                h = block(h, features, causal=True)
            token = (self.norm(h[:, -1]) @ self.token_embed.weight.T).argmax(-1)  # [B]
            ids = torch.cat([ids, token[:, None]], dim=1)
            done |= token == eos_id
            if bool(done.all()):
                break
            x = torch.cat([x, self.token_embed(token)[:, None]], dim=1)
        rows = ids.tolist()
        return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]


def reversed_words(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first length - 1 tokens in reverse order, its last token ([EOS]) and padding kept."""
    T = ids.shape[1]
    position = torch.arange(T, device=ids.device)[None].expand(len(ids), -1)
    last = (lengths - 1)[:, None]
    index = torch.where(position < last, last - 1 - position, position)
    return ids.gather(1, index)
