"""Shared pieces of the speed benchmarks: an untrained run, real pretrain batches, side-by-side timing.

Speed does not depend on what the weights have learnt, so the benchmarks build a run with random
weights in a temporary folder (CLIP, tokenizer-detokenizer, pixel decoder, and a BPE tokenizer
trained on the Shapes world's text in about a second) instead of training one for half an hour.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vlgpt.core.config import ModelConfig, PixelDecoderModelConfig, TokenizerPairConfig, VLGPTConfig
from vlgpt.core.presets import preset
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data import sequences as S
from vlgpt.data.sources import make_source
from vlgpt.models.clip import CLIP
from vlgpt.models.loading import save_clip, save_pixel_decoder, save_tokenizer_pair
from vlgpt.models.pixel_decoder import build_pixel_decoder
from vlgpt.models.tokenizer_pair import TokenizerPair
from vlgpt.models.vlgpt import VLGPT


def make_untrained_run(directory: Path, preset_name: str = "small", seed: int = 0) -> ModelConfig:
    """Write clip/, tokenizer/ and decoder/ model folders with random weights, as the stages export them."""
    config = preset(preset_name).model
    torch.manual_seed(seed)
    clip = CLIP(config.clip)
    pair = TokenizerPair(TokenizerPairConfig.for_clip(config.tokenizer, config.clip))
    decoder = build_pixel_decoder(PixelDecoderModelConfig.for_clip(config.decoder, config.clip))
    text = TextTokenizer.train(
        make_source("world", config.clip.vision.image_size).corpus(1000), config.clip.text.vocab_size
    )
    directory = Path(directory)
    for stage in ("clip", "tokenizer", "decoder"):
        (directory / stage / "model").mkdir(parents=True, exist_ok=True)
    save_clip(directory / "clip" / "model", clip, text)
    save_tokenizer_pair(directory / "tokenizer" / "model", pair)
    save_pixel_decoder(directory / "decoder" / "model", decoder)
    return config


def caption_prompt(embeddings: torch.Tensor) -> list[S.Segment]:
    """User: [IMG] e_1..e_N [/IMG] Describe the image. Assistant:"""
    message = {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}],
    }
    return S.chat_segments([message], [embeddings], add_generation_prompt=True)


def synthetic_batch(
    model_config: VLGPTConfig, batch_size: int, length: int, images: int, seed: int = 0
) -> dict:
    """A right-padded-free batch of `length` positions with `images` images of N embeddings each,
    spread evenly between text; every position after the first is a target (pretraining's layout)."""
    g = torch.Generator().manual_seed(seed)
    n, d = model_config.num_image_tokens, model_config.image_token_dim
    ids = torch.randint(6, model_config.vocab_size, (batch_size, length), generator=g)
    is_image = torch.zeros(batch_size, length, dtype=torch.bool)
    if images:
        gap = (length - images * n) // images
        if gap < 3:
            raise ValueError(f"{images} images of {n} embeddings do not fit in {length} positions")
        for i in range(images):
            start = i * (gap + n) + gap
            is_image[:, start : start + n] = True
    embeds = torch.randn(batch_size, length, d, generator=g) * is_image[..., None]
    text_targets = torch.full((batch_size, length), -100)
    text_targets[:, :-1] = torch.where(is_image[:, 1:], -100, ids[:, 1:])
    image_targets = torch.zeros_like(embeds)
    image_targets[:, :-1] = embeds[:, 1:]
    image_target_mask = torch.zeros_like(is_image)
    image_target_mask[:, :-1] = is_image[:, 1:]
    return {
        "ids": ids,
        "image_embeds": embeds,
        "is_image": is_image,
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "text_targets": text_targets,
        "image_targets": image_targets,
        "image_target_mask": image_target_mask,
    }


def training_flops(model: VLGPT, batch: dict) -> float:
    """Model FLOPs of one training step: the matmuls of forward + backward (3x forward) that the
    batch's real tokens need, in PaLM's convention (Chowdhery et al. 2022, App. B): 2 FLOPs per
    weight per token, attention's QK^T and AV counted in full over each sequence's real length.
    Padding is not useful work and is not counted, so the figure does not depend on how an
    implementation treats it; both models are scored against the same number."""
    lm, config = model.config.lm, model.config
    lengths = batch["attention_mask"].sum(1).double()
    per_token = 2 * lm.depth * (4 * lm.width**2 + 3 * lm.width * lm.mlp_hidden)
    forward = (
        per_token * lengths.sum()
        + 2 * 2 * lm.depth * lm.width * (lengths**2).sum()  # attention
        + 2 * lm.width * config.vocab_size * (batch["text_targets"] != -100).sum()  # LM head
        + 2 * 2 * lm.width * config.image_token_dim * batch["is_image"].sum()
    )  # projection in, head out
    return 3.0 * float(forward)


def machine() -> dict:
    """What the figures were measured on: CPU model, torch's kernel level, AMX (fast bf16) or not."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "amx_bf16": "amx_bf16" in cpuinfo,
    }


def load() -> float:
    """1-minute load average: how busy the machine was while a figure was taken."""
    return round(os.getloadavg()[0], 2)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved(runs: dict[str, Callable[[], None]], rounds: int, repeats: int = 1, warmup: int = 1) -> dict:
    """Seconds per call of each function, timed round-robin (a, b, a, b, ...) so that a change in
    the machine's load hits every contender alike. Returns each one's median over rounds and the
    median of its per-round time over the first contender's (2.0: twice as slow as the first)."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    first = next(iter(runs))
    return {
        name: {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "time_vs_first": statistics.median(a / b for a, b in zip(t, times[first])),
        }
        for name, t in times.items()
    }


def matmul_tflops(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """This machine's matmul throughput now (all threads torch uses), as benchmarks/matmul_peak.py."""
    return matmul_tflops_at(dtype, size, size, size, seconds)


def matmul_tflops_at(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """Matmul throughput at one GEMM shape [m, k] x [k, n]: what the model's own layers can reach."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - start) / 1e12


CATEGORIES = (
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("optimizer", ("adamw",)),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm")),
)


def profile_split(fn: Callable[[], None], calls: int = 2) -> dict:
    """Milliseconds per call of `fn` by kind of work (self CPU time, torch.profiler): matmuls,
    attention kernels, the optimizer, and everything else (element-wise ops, copies, casts,
    indexing, and the per-op dispatch cost of small tensors)."""
    fn()
    with torch.profiler.profile() as prof:
        for _ in range(calls):
            fn()
    split = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, needles in CATEGORIES if any(s in name for s in needles)), "other")
        split[kind] += event.self_cpu_time_total / 1000 / calls
    return {k: round(v, 1) for k, v in split.items()}
