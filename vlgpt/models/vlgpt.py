"""VL-GPT: one decoder-only transformer over text tokens and continuous image embeddings (§3.2).

Text enters through a token embedding, images through an input projection of their N embeddings,
wrapped in [IMG] ... [/IMG]. Two heads read the same hidden states: the LM head predicts the next
text token (cross-entropy), the image head the next image embedding (MSE, or a flow-matching
sample: `models/image_heads.py`). One
auto-regressive objective, L = CE + lambda * MSE, with per-position masks saying which targets count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import VLGPTConfig
from .image_heads import build_image_head
from .queries import grid_homes
from .transformer import KVCache, LanguageModel


class VLGPT(nn.Module):
    """The splice, the two heads and the losses, over a *backbone* (`self.transformer`).

    A backbone is our `transformer.LanguageModel` (the default) or `hf_backbone.HFBackbone` (a
    Hugging Face causal LM). Both implement one contract, and nothing here reaches past it:
    `width`, `max_seq_len`, `embed_tokens(ids)`, `forward(x, attention_mask, cache) -> hidden` (after
    the final norm), `logits(hidden)`, `new_cache(batch, max_len, dtype, device)`; for LoRA
    `lora_root`, `lora_targets`, `lora_trains_embeddings` and `embedding_modules`.
    """

    # Older names of weights, read by `checkpoint.load_weights`: before the backbone held the token
    # embedding and LM head they sat at the top; the image head was named `regression_head`.
    RENAMED = {
        "token_embed.": "transformer.token_embed.",
        "lm_head.": "transformer.lm_head.",
        "regression_head.": "image_head.",
    }

    def __init__(self, config: VLGPTConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.config = config
        if backbone is None:  # our own; built in this order so that a seed gives the weights it always gave
            width = config.lm.width
            token_embed = nn.Embedding(config.vocab_size, width)
            self.build_image_input(width)
            self.transformer = LanguageModel(config.lm, token_embed)
        else:
            self.transformer = backbone
            self.build_image_input(backbone.width)
        width = self.transformer.width
        self.image_head = build_image_head(config.lm.image_head, width, config.image_token_dim)
        if config.lm.draw not in DRAW_MODES:
            raise ValueError(f"unknown lm.draw {config.lm.draw!r}; choose one of {', '.join(DRAW_MODES)}")
        self.draw_queries = None
        if config.lm.draw == "queries":  # one learned query per place of a drawn image
            self.draw_queries = nn.Parameter(torch.randn(config.num_image_tokens, width) * width**-0.5)
        if backbone is None:
            nn.init.normal_(self.transformer.token_embed.weight, std=width**-0.5)
            nn.init.normal_(self.transformer.lm_head.weight, std=width**-0.5)

    @property
    def lora_targets(self) -> tuple[str, ...] | str:
        return self.transformer.lora_targets

    @property
    def lora_trains_embeddings(self) -> bool:
        return self.transformer.lora_trains_embeddings

    def build_image_input(self, width: int) -> None:
        """The input projection for image embeddings; with `lm.normalize_inputs`, per-channel mean
        and std buffers (set from training images by `fit_input_stats`, saved with the weights)
        standardise each embedding before it."""
        d = self.config.image_token_dim
        kind = self.config.lm.image_projector
        if kind == "linear":
            self.image_in = nn.Linear(d, width)
        elif kind == "mlp":
            self.image_in = nn.Sequential(nn.Linear(d, width), nn.GELU(), nn.Linear(width, width))
        else:
            raise ValueError(f"unknown lm.image_projector {kind!r}; choose linear or mlp")
        for layer in self.image_in.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
                nn.init.zeros_(layer.bias)
        if self.config.lm.normalize_inputs:
            self.register_buffer("image_mean", torch.zeros(d))
            self.register_buffer("image_std", torch.ones(d))
        if self.config.lm.whiten_inputs:
            self.register_buffer("image_center", torch.zeros(d))
            self.register_buffer("image_whiten", torch.eye(d))
        self.image_pos = None
        if self.config.lm.image_positions:
            self.image_pos = nn.Parameter(tile_positions(self.config.num_image_tokens, width))

    @torch.no_grad()
    def fit_input_stats(self, embeddings: torch.Tensor) -> None:
        """Measure the codec's per-channel mean and std (or mean and covariance) on image embeddings
        [M, d]."""
        z = embeddings.float().reshape(-1, self.config.image_token_dim)
        if self.config.lm.normalize_inputs:
            self.image_mean.copy_(z.mean(0))
            self.image_std.copy_(z.std(0).clamp(min=1e-3 * float(z.std().clamp(min=1e-6))))
        if self.config.lm.whiten_inputs:
            # ZCA: W = C^-1/2, with directions below 1e-4 of the top one kept as they are.
            centered = z - z.mean(0)
            values, vectors = torch.linalg.eigh(centered.T @ centered / max(len(z) - 1, 1))
            scale = values.clamp(min=1e-4 * float(values.max().clamp(min=1e-12))).rsqrt()
            self.image_center.copy_(z.mean(0))
            self.image_whiten.copy_(vectors @ torch.diag(scale) @ vectors.T)

    def project_image(self, embeds: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings [..., d] -> transformer inputs [..., width]; `index` [...] says which of
        its image's N places each one is (needed with `lm.image_positions`)."""
        weight = self.image_in_weight
        if self.config.lm.normalize_inputs:
            embeds = (embeds.to(self.image_mean.dtype) - self.image_mean) / self.image_std
        if self.config.lm.whiten_inputs:
            embeds = (embeds.to(self.image_center.dtype) - self.image_center) @ self.image_whiten
        x = self.image_in(embeds.to(device=weight.device, dtype=weight.dtype))
        if self.image_pos is not None:
            x = x + self.image_pos[index.clamp(max=self.config.num_image_tokens - 1)].to(x.dtype)
        return x

    @property
    def image_in_weight(self) -> torch.Tensor:
        """The input projection's first weight: the device and dtype image inputs are cast to."""
        return next(self.image_in.parameters())

    @property
    def max_seq_len(self) -> int:
        return self.transformer.max_seq_len

    @property
    def lora_root(self) -> nn.Module:
        """Where LoRA adapters go (VL-GPT §3.2: every linear layer of the transformer)."""
        return self.transformer.lora_root

    @property
    def embedding_modules(self) -> tuple[nn.Module, ...]:
        return self.transformer.embedding_modules

    def new_cache(self, batch: int, max_len: int):
        """The backbone's KV cache for `batch` rows of up to `max_len` positions."""
        weight = self.image_in_weight
        return self.transformer.new_cache(batch, max_len, dtype=weight.dtype, device=weight.device)

    def embed(
        self,
        ids: torch.Tensor,
        image_embeds: torch.Tensor,
        is_image: torch.Tensor,
        is_query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Splice: ids [B, T] and image_embeds [B, T, d] -> inputs [B, T, width] by the is_image mask;
        where `is_query` (a drawn image, with `lm.draw=queries`), each place's learned query."""
        text = self.embed_text(ids)
        place = place_in_image(is_image)
        image = self.project_image(image_embeds, place).to(text.dtype)
        x = torch.where(is_image[..., None], image, text)
        if is_query is not None and self.draw_queries is not None:
            queries = self.draw_queries[place.clamp(max=self.config.num_image_tokens - 1)].to(text.dtype)
            x = torch.where(is_query[..., None], queries, x)
        return x

    def forward(self, batch: dict, cache: KVCache | None = None) -> dict:
        """Hidden states and both heads' outputs; with targets in `batch`, the losses too.

        batch: ids [B, T], image_embeds [B, T, d], is_image [B, T], attention_mask [B, T] (optional),
        text_targets [B, T] (-100 = no loss), image_targets [B, T, d], image_target_mask [B, T],
        is_query [B, T] (optional: the places of drawn images, with `lm.draw=queries`).
        Position t predicts position t + 1 (a query, its own place); the sequence builder lays the
        targets out that way.
        """
        x = self.embed(batch["ids"], batch["image_embeds"], batch["is_image"], batch.get("is_query"))
        hidden = self.transformer(x, batch.get("attention_mask"), cache)
        out = {"hidden": hidden}
        if "text_targets" in batch:
            targets = batch["text_targets"]
            scored = targets != -100
            if scored.any():
                logits = self.next_token_logits(
                    hidden[scored]
                )  # [M, V]: only the positions with a text target
                if "text_weights" in batch:  # each target's share (sequences.build: token, sqrt or turn)
                    weights = batch["text_weights"][scored]
                    losses = F.cross_entropy(logits.float(), targets[scored], reduction="none")
                    ce = (losses * weights).sum() / weights.sum().clamp_min(1e-8)
                else:
                    ce = F.cross_entropy(logits.float(), targets[scored])
            else:
                ce = hidden.new_zeros(())
            mask = batch["image_target_mask"]
            if mask.any():
                mse = self.image_head.loss(hidden[mask], batch["image_targets"][mask])  # the head's own loss
            else:
                mse = hidden.new_zeros(())
            out.update(loss=ce + self.config.lm.regression_weight * mse, ce=ce.detach(), mse=mse.detach())
        return out

    def step(
        self,
        cache: KVCache,
        token: int | None = None,
        embedding: torch.Tensor | None = None,
        place: int = 0,
    ) -> torch.Tensor:
        """One decoding position, a text token or an image's `place`-th embedding [d], through the
        cache -> its hidden state [width]. The same computation as `forward` on one position,
        without the splice: only the input that is used is embedded."""
        if embedding is not None:
            index = torch.tensor([[place]], device=self.image_in_weight.device)
            x = self.project_image(embedding.view(1, 1, -1), index)
        else:
            x = self.embed_text(torch.tensor([[token]], device=self.image_in_weight.device))
        return self.transformer(x, cache=cache)[0, -1]

    def query_states(self, cache: KVCache) -> torch.Tensor:
        """`lm.draw=queries`: the N queries of an image, after its [IMG], through the cache in one
        pass -> their hidden states [N, width], each of which the image head turns into its place's
        embedding."""
        x = self.draw_queries[None].to(self.image_in_weight.dtype)
        return self.transformer(x, cache=cache)[0]

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.transformer.embed_tokens(ids)

    def next_token_logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        return self.transformer.logits(hidden_last)

    def next_image_embedding(
        self,
        hidden_last: torch.Tensor,
        generator: torch.Generator | None = None,
        uncond: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """The image embedding [..., d] that each hidden state [..., width] predicts: the regression
        (mse head) or a sample (flow head), guided away from `uncond` (the unconditional context's
        hidden state(s)) when guidance != 1."""
        flat = hidden_last.reshape(-1, hidden_last.shape[-1])
        if uncond is not None:
            uncond = uncond.reshape(-1, hidden_last.shape[-1])
        sample = self.image_head.sample(flat, generator, uncond, guidance)
        return sample.reshape(*hidden_last.shape[:-1], -1).to(hidden_last.dtype)


DRAW_MODES = ("next", "queries")


def place_in_image(is_image: torch.Tensor) -> torch.Tensor:
    """[B, T] mask of image positions -> [B, T] index of each within its own image span (0, 1, ...,
    N - 1 for an image's N embeddings; 0 at text positions)."""
    count = is_image.long().cumsum(dim=1)  # image positions so far, this one included
    starts = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:, :-1]
    before = torch.where(starts, count - 1, torch.zeros_like(count)).cummax(dim=1).values
    return torch.where(is_image, count - 1 - before, torch.zeros_like(count))


def tile_positions(n: int, width: int, scale: float = 0.1) -> torch.Tensor:
    """[n, width] start for the image place embeddings: sines and cosines of each tile's centre (x in
    the first half of the channels, y in the second) on the raster tiling the image tokenizer uses."""
    homes = grid_homes(n)  # [n, 2] in (0, 1)
    quarter = max(width // 4, 1)
    # Geometric from a half period over the image (monotonic) to one period per two cells (the
    # finest a raster of 8 across can tell apart).
    freqs = 0.5 * torch.pi * 2.0 ** torch.linspace(0.0, 4.0, quarter)
    parts = []
    for axis in range(2):
        angles = homes[:, axis : axis + 1] * freqs  # [n, quarter]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1)[:, :width]
    return scale * torch.nn.functional.pad(table, (0, width - table.shape[1]))
