"""This machine's matrix-multiply peak in fp32 and bf16 (torch, all cores), as one JSON line.

    python benchmarks/matmul_peak.py [--size 1024] [--repeats 20]

Why it matters: `--precision auto` uses bf16 only where it is faster; on CPUs without AMX or
AVX512-BF16, bf16 matmuls fall back to slow kernels.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vlgpt.train.engine import bf16_is_fast


def tflops(size: int, dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    fp32 = tflops(args.size, torch.float32, args.repeats)
    bf16 = tflops(args.size, torch.bfloat16, max(1, args.repeats // 10))
    print(
        json.dumps(
            {
                "benchmark": "matmul_peak",
                "size": args.size,
                "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "fp32_tflops": round(fp32, 4),
                "bf16_tflops": round(bf16, 4),
                "bf16_autocast_chosen": bf16_is_fast(torch.device("cpu")),
            }
        )
    )


if __name__ == "__main__":
    main()
