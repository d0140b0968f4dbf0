"""Training throughput in one process and under torchrun, on this machine's CPU cores.

    python benchmarks/distributed.py [--preset small] [--stage clip] [--steps 30] [--global-batch 128]

Trains one stage at the same global batch in each layout (1 process x 2 threads, 1 process x 1
thread, 2 processes x 1 thread under DDP and under FSDP) and prints one JSON line: samples/s over
the steps after the first logging window (start-up and warm-up excluded), from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAYOUTS = {  # name: (processes, threads per process, strategy)
    "1 process x 2 threads": (1, 2, "ddp"),
    "1 process x 1 thread": (1, 1, "ddp"),
    "2 processes x 1 thread, ddp": (2, 1, "ddp"),
    "2 processes x 1 thread, fsdp": (2, 1, "fsdp"),
}


def command(processes: int, threads: int, strategy: str, args: argparse.Namespace, out: Path) -> list[str]:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    return [
        *launcher,
        "-m",
        "vlgpt",
        "train",
        args.stage,
        "--preset",
        args.preset,
        "--out",
        str(out),
        "--steps",
        str(args.steps),
        "--log-every",
        str(args.steps // 3),
        "--save-every",
        "0",
        "--batch-size",
        str(args.global_batch // processes),
        "--threads",
        str(threads),
        "--strategy",
        strategy,
        "--precision",
        "fp32",
        "--eval-size",
        "32",
    ]


def steady_samples_per_s(stage_dir: Path) -> float:
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]
    return sum(windows) / len(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--stage", default="clip", choices=["clip"], help="stages after clip need a trained run"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--global-batch", type=int, default=128)
    args = parser.parse_args()
    results = {}
    root = Path(tempfile.mkdtemp(prefix="vlgpt-bench-dist-"))
    try:
        for name, (processes, threads, strategy) in LAYOUTS.items():
            out = root / name.replace(" ", "_").replace(",", "")
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            result = subprocess.run(
                command(processes, threads, strategy, args, out), env=env, capture_output=True, text=True
            )
            if result.returncode:
                sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
            results[name] = round(steady_samples_per_s(out / args.stage), 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "distributed",
                "preset": args.preset,
                "stage": args.stage,
                "steps": args.steps,
                "global_batch": args.global_batch,
                "cores": os.cpu_count(),
                "load_average": os.getloadavg()[0],
                "samples_per_s": results,
            }
        )
    )


if __name__ == "__main__":
    main()
