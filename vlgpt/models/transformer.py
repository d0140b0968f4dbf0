"""Decoder-only transformer for VL-GPT's language model: RoPE, RMSNorm, SwiGLU, SDPA, KV cache.

Llama-style, small enough to read in one sitting. `Transformer` consumes input *embeddings* (not
ids), since VL-GPT splices projected image embeddings between text token embeddings. `LanguageModel`
adds the token embedding and the LM head: it is VL-GPT's own backbone, one of the two
implementations (with `hf_backbone.HFBackbone`) of the contract `models/vlgpt.py` states.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import LanguageModelConfig

TransformerConfig = LanguageModelConfig  # the fields the transformer reads: width, depth, heads, ...


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # x * rsqrt(mean(x^2) + eps) * weight


def rope_tables(head_dim: int, max_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin [max_len, hd], laid out for `apply_rope`'s half rotation."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # [T, hd/2]
    return torch.cat([angles.cos(), angles.cos()], -1), torch.cat([-angles.sin(), angles.sin()], -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., hd]; rotate pairs (x1, x2) of the two halves by position-dependent angles:
    [x1 cos - x2 sin, x2 cos + x1 sin] = x * [cos, cos] + [x2, x1] * [-sin, sin], in three ops."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


class KVCache:
    """Pre-allocated keys and values for every layer: static shapes, no per-token reallocation."""

    def __init__(self, config: TransformerConfig, batch: int, max_len: int, dtype=torch.float32, device=None):
        head_dim = config.width // config.heads
        shape = (config.depth, batch, config.heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.max_len = max_len


ATTENTION_GROUPS = 8  # length groups of a training batch's rows (1: one [B, T_max] layout)


class RealTokens:
    """Where the real tokens of a right-padded batch are, to run per-token layers on them alone.

    LM batches are about half padding (short captions padded to a long interleaved document);
    the projections and the MLP skip it. Attention runs on the rows grouped by length, each group
    padded only to its own longest row: an instruction batch's attention costs about 0.3 of one
    [B, T_max] layout's (docs/BENCHMARKS.md, "The transformer's attention").
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.shape = attention_mask.shape
        self.index = attention_mask.flatten().nonzero().squeeze(1)  # [M]
        lengths = attention_mask.bool().sum(1)
        starts = lengths.cumsum(0) - lengths  # each row's first token in the [M] layout
        self.groups = []  # (rows b_g, their longest T_g, real slots of [b_g * T_g], their [M] index)
        sources = [lengths.new_zeros(0)]
        for rows in lengths.argsort(descending=True).tensor_split(min(ATTENTION_GROUPS, len(lengths))):
            longest = int(lengths[rows].max())
            if longest == 0:  # rows of padding only: nothing to attend
                continue
            offsets = torch.arange(longest, device=lengths.device)
            real = offsets[None] < lengths[rows, None]  # [b_g, T_g]
            slots = real.flatten().nonzero().squeeze(1)
            source = (starts[rows, None] + offsets[None])[real]
            self.groups.append((len(rows), longest, slots, source))
            sources.append(source)
        self.inverse = torch.cat(sources).argsort()  # group order -> [M] order

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [M, C]."""
        return x.flatten(0, 1).index_select(0, self.index)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """[M, C] -> [B, T, C], zeros at the padding."""
        return x.new_zeros(self.shape.numel(), x.shape[-1]).index_copy(0, self.index, x).view(*self.shape, -1)

    def attend(self, qk: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        """Causal attention of [M, 2C] queries-and-keys and [M, C] values, group by group -> [M, C]."""
        C = v.shape[-1]
        qkv = torch.cat([qk, v], dim=-1)  # [M, 3C]
        parts = [v.new_zeros(0, C)]
        for rows, longest, slots, source in self.groups:
            laid = qkv.new_zeros(rows * longest, 3 * C).index_copy(0, slots, qkv.index_select(0, source))
            q, k, v_g = laid.view(rows, longest, 3, heads, -1).permute(2, 0, 3, 1, 4)  # [b, h, T, hd]
            y = F.scaled_dot_product_attention(q, k, v_g, is_causal=longest > 1)
            parts.append(y.transpose(1, 2).reshape(rows * longest, C).index_select(0, slots))
        return torch.cat(parts).index_select(0, self.inverse)


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is real positions first, then padding (what `collate` builds)."""
    mask = attention_mask.bool()
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.out = nn.Linear(config.width, config.width, bias=False)

    def forward(
        self,
        x,
        cos,
        sin,
        mask,
        causal: bool,
        cache: KVCache | None,
        layer: int,
        real: RealTokens | None = None,
    ):
        """x [B, T, C], or [M, C] with `real` (a right-padded batch's real tokens); cos, sin [T or M, 1, hd].
        Attention uses `mask`, or SDPA's own causal masking when `causal` (no mask tensor: the fast
        kernel)."""
        C = x.shape[-1]
        hd = C // self.heads
        qkv = self.qkv(x)  # [..., 3C]
        qk, v = qkv.split([2 * C, C], dim=-1)
        qk = apply_rope(qk.unflatten(-1, (2 * self.heads, hd)), cos, sin).flatten(
            -2
        )  # q and k rotated together
        # Under CPU bf16 autocast, attention runs in fp32: the bf16 flash-attention backward is
        # several times slower than fp32's at these head sizes (benchmarks/train_speed.py). The
        # cast happens here, on contiguous rows of real tokens, ~5x cheaper than on permuted heads.
        fp32_attention = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if fp32_attention:
            qk, v = qk.float(), v.float()
        if real is not None:  # training: no cache, causal attention within each row's real tokens
            with torch.autocast("cpu", enabled=False) if fp32_attention else contextlib.nullcontext():
                y = real.attend(qk, v, self.heads)
            return self.out(y)
        B, T = v.shape[:2]
        q, k = qk.view(B, T, 2, self.heads, hd).permute(2, 0, 3, 1, 4)  # [B, h, T, hd] each
        v = v.unflatten(-1, (self.heads, hd)).transpose(1, 2)
        if cache is not None:
            start = cache.length
            cache.keys[layer, :, :, start : start + T] = k
            cache.values[layer, :, :, start : start + T] = v
            k, v = cache.keys[layer, :, :, : start + T], cache.values[layer, :, :, : start + T]
        if fp32_attention:
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.gate = nn.Linear(config.width, config.mlp_hidden, bias=False)
        self.up = nn.Linear(config.width, config.mlp_hidden, bias=False)
        self.down = nn.Linear(config.mlp_hidden, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class DecoderBlock(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(config.width, config.norm_eps), SelfAttention(config)
        self.mlp_norm, self.mlp = RMSNorm(config.width, config.norm_eps), SwiGLU(config)

    def forward(self, x, cos, sin, mask, causal, cache, layer, real=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, causal, cache, layer, real)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.width % config.heads or (config.width // config.heads) % 2:
            raise ValueError(f"width {config.width} must split into {config.heads} heads of even size")
        self.config = config
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.depth))
        self.norm = RMSNorm(config.width, config.norm_eps)
        cos, sin = rope_tables(config.width // config.heads, config.max_seq_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                # LeCun-normal, with residual projections scaled down by depth (GPT-2 §2.3).
                std = p.shape[1] ** -0.5 * (
                    (2 * config.depth) ** -0.5 if name.endswith(("out.weight", "down.weight")) else 1
                )
                nn.init.normal_(p, std=std)

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x [B, T, width] -> hidden [B, T, width].

        `attention_mask` [B, T_total] marks real (1) vs padding (0) positions, left-padded or packed
        prompts included; causality is always applied. With `cache`, x continues the cached sequence.
        A right-padded batch without a cache (training) runs its per-token layers on the real tokens
        only, and its padding positions come back as zeros.
        """
        T = x.shape[1]
        start = cache.length if cache is not None else 0
        total = start + T
        if total > self.config.max_seq_len:
            raise ValueError(f"sequence of {total} positions exceeds max_seq_len {self.config.max_seq_len}")
        positions = slice(start, total)
        real = None
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        if attention_mask is not None and cache is None and right_padded(attention_mask):
            # Training batches: causality alone keeps every real query off the padding after it.
            real, attention_mask = RealTokens(attention_mask), None
            x = real.gather(x)  # [M, width]
            positions = real.index % T  # each real token's position in its row
        # RoPE in token layout, in the dtype q will have (bf16 under autocast, as HF Llama does).
        dtype = (
            torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        )
        cos, sin = (
            self.rope_cos[positions, None].to(dtype),
            self.rope_sin[positions, None].to(dtype),
        )  # [T or M, 1, hd]
        mask, causal = None, False
        if attention_mask is not None:  # left padding or holes: an explicit mask
            causal_mask = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(
                diagonal=start
            )  # [T, total]
            mask = causal_mask[None, None] & attention_mask[:, None, None, :total].bool()
            # A fully masked row (a padding query) would give NaN; let it attend to itself.
            own = (
                torch.arange(T, device=x.device)[:, None] + start
                == torch.arange(total, device=x.device)[None, :]
            )
            mask = mask | own[None, None]
        elif start == 0:
            causal = T > 1
        elif T > 1:  # a chunk continuing the cache: SDPA's causal flag would align it to the cache's start
            mask = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(diagonal=start)[None, None]
        # else: one new position attends to every cached one, no mask at all
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, causal, cache, layer, real)
        if cache is not None:
            cache.length = total
        x = self.norm(x)
        return real.scatter(x) if real is not None else x


class LanguageModel(Transformer):
    """Our backbone: the transformer with its token embedding (`token_embed`, handed in: VLGPT builds
    it first, so that a seed gives the weights it always gave) and its LM head (`lm_head`)."""

    lora_targets: tuple[str, ...] | str = ("qkv", "out", "gate", "up", "down")  # every block's linears
    lora_trains_embeddings = False  # with LoRA, the token embedding and LM head stay frozen (VL-GPT §3.2)

    def __init__(self, config: TransformerConfig, token_embed: nn.Embedding):
        super().__init__(config)
        self.token_embed = token_embed
        self.lm_head = nn.Linear(config.width, token_embed.num_embeddings, bias=False)

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    @property
    def lora_root(self) -> nn.Module:
        return self

    @property
    def embedding_modules(self) -> tuple[nn.Module, ...]:
        return self.token_embed, self.lm_head

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embed(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def new_cache(self, batch: int, max_len: int, dtype=torch.float32, device=None) -> KVCache:
        return KVCache(self.config, batch, max_len, dtype=dtype, device=device)
