"""Decoder-only transformer for VL-GPT's language model: RoPE, RMSNorm, SwiGLU, SDPA, KV cache.

Llama-style, small enough to read in one sitting. It consumes input *embeddings* (not ids), since
VL-GPT splices projected image embeddings between text token embeddings; the caller owns the
embedding table and the heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LanguageModelConfig


TransformerConfig = LanguageModelConfig  # the fields the transformer reads: width, depth, heads, ...


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, max_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # [T, hd/2]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, h, T, hd]; rotate pairs (x1, x2) of the two halves by position-dependent angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Pre-allocated keys and values for every layer: static shapes, no per-token reallocation."""

    def __init__(self, config: TransformerConfig, batch: int, max_len: int, dtype=torch.float32, device=None):
        head_dim = config.width // config.heads
        shape = (config.depth, batch, config.heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.max_len = max_len


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.out = nn.Linear(config.width, config.width, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # [B, h, T, hd]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            start = cache.length
            cache.keys[layer, :, :, start:start + T] = k
            cache.values[layer, :, :, start:start + T] = v
            k, v = cache.keys[layer, :, :, : start + T], cache.values[layer, :, :, : start + T]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer)
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
                std = p.shape[1] ** -0.5 * ((2 * config.depth) ** -0.5 if name.endswith(("out.weight", "down.weight")) else 1)
                nn.init.normal_(p, std=std)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """x [B, T, width] -> hidden [B, T, width].

        `attention_mask` [B, T_total] marks real (1) vs padding (0) positions, left-padded or packed
        prompts included; causality is always applied. With `cache`, x continues the cached sequence.
        """
        B, T, _ = x.shape
        start = cache.length if cache is not None else 0
        total = start + T
        if total > self.config.max_seq_len:
            raise ValueError(f"sequence of {total} positions exceeds max_seq_len {self.config.max_seq_len}")
        positions = torch.arange(start, total, device=x.device)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        causal = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(diagonal=start)  # [T, total]
        mask = causal[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :total].bool()
            # A fully masked row (a padding query) would give NaN; let it attend to itself.
            own = torch.arange(T, device=x.device)[:, None] + start == torch.arange(total, device=x.device)[None, :]
            mask = mask | own[None, None]
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, layer)
        if cache is not None:
            cache.length = total
        return self.norm(x)
