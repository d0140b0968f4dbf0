"""How a training step's time grows with sequence length and with images per sequence.

    python benchmarks/scaling.py [--preset small] [--batch-size 8] [--rounds 3]

Synthetic unpadded batches (`harness.synthetic_batch`: random ids, random image embeddings, every
position a target) of the preset's language model, one optimizer step each, in the precision
`auto` picks. Sequence length: 64 to the context (384 for small) with one image each, ours and the
HF peer alternating. Images per sequence: 0 to 8 images of N embeddings between 40 text tokens,
so the length grows with the images. Each sweep is fitted with time = a * x^b by least squares on
logs; b is the exponent (1: linear). One JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import interleaved, load, machine, synthetic_batch
from hf_peer import HFPeer
from train_speed import make_step

from vlgpt.core.config import VLGPTConfig
from vlgpt.core.presets import preset
from vlgpt.models.vlgpt import VLGPT
from vlgpt.train.engine import make_optimizer, resolve_precision


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """b in y = a * x^b, least squares on (log x, log y)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load()
    model_config = preset(args.preset).model
    recipe = preset(args.preset).train["pretrain"]
    n, d = model_config.tokenizer.num_tokens, model_config.tokenizer.token_dim
    config = VLGPTConfig(model_config.clip.text.vocab_size, n, d, model_config.lm)
    torch.manual_seed(0)
    model = VLGPT(config).train()
    peer = HFPeer(model).train()
    dtype = resolve_precision("auto", torch.device("cpu"))
    max_len = model_config.lm.max_seq_len

    lengths = [length for length in (64, 96, 128, 192, 256, 384) if length <= max_len and length >= n + 8]
    by_length = {"length": lengths, "ours_ms": [], "peer_ms": [], "speedup_vs_peer": []}
    for length in lengths:
        batch = [synthetic_batch(config, args.batch_size, length, 1)]
        timing = interleaved(
            {
                "ours": make_step(model, make_optimizer(model, recipe), batch, 1.0, dtype),
                "peer": make_step(peer, make_optimizer(peer, recipe), batch, 1.0, dtype),
            },
            args.rounds,
        )
        by_length["ours_ms"].append(round(1000 * timing["ours"]["median_s"], 1))
        by_length["peer_ms"].append(round(1000 * timing["peer"]["median_s"], 1))
        by_length["speedup_vs_peer"].append(round(timing["peer"]["time_vs_first"], 3))
    by_length["ours_exponent"] = round(fit_exponent(lengths, by_length["ours_ms"]), 3)
    by_length["peer_exponent"] = round(fit_exponent(lengths, by_length["peer_ms"]), 3)

    text = 40
    counts = [k for k in (0, 1, 2, 4, 8) if text + k * (n + 2 + 8) <= max_len]
    by_images = {"images": counts, "length": [], "ours_ms": []}
    for k in counts:
        length = text + k * (n + 2 + 8)
        batch = [synthetic_batch(config, args.batch_size, length, k)]
        timing = interleaved(
            {"ours": make_step(model, make_optimizer(model, recipe), batch, 1.0, dtype)}, args.rounds
        )
        by_images["length"].append(length)
        by_images["ours_ms"].append(round(1000 * timing["ours"]["median_s"], 1))
    nonzero = [(k, t) for k, t in zip(counts, by_images["ours_ms"]) if k]
    by_images["ours_exponent"] = round(fit_exponent([k for k, _ in nonzero], [t for _, t in nonzero]), 3)
    print(
        json.dumps(
            {
                "benchmark": "scaling",
                "preset": args.preset,
                **machine(),
                "threads": torch.get_num_threads(),
                "precision": "bf16" if dtype is not None else "fp32",
                "batch_size": args.batch_size,
                "by_length": by_length,
                "by_images": by_images,
                "load_avg_1min": [load_before, load()],
            }
        )
    )


if __name__ == "__main__":
    main()
