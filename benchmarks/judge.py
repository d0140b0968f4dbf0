"""Judge accuracy (clean, blurred, noisy renders) and render throughput, as one JSON line.

python benchmarks/judge.py [--n 1000] [--render-n 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

# One core, as the goal is stated per core.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from vlgpt.eval.world_eval import judge_accuracy
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test scenes judged per condition")
    parser.add_argument("--render-n", type=int, default=5000, help="scenes rendered for throughput")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    world = ShapesWorld("test", args.size, args.size)
    scenes = [world.scene(i) for i in range(max(args.n, args.render_n))]
    accuracy = judge_accuracy(scenes[: args.n])
    render(scenes[0])  # warm the background cache
    start = time.perf_counter()
    for scene in scenes[: args.render_n]:
        render(scene)
    render_rate = args.render_n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(args.render_n):
        world.scene(i)
    sample_rate = args.render_n / (time.perf_counter() - start)
    print(
        json.dumps(
            {
                "benchmark": "judge",
                "size": args.size,
                "n": args.n,
                "judge_clean": accuracy["clean"]["mean"],
                "judge_blur_sigma1": accuracy["blur"]["mean"],
                "judge_noise_sigma0.05": accuracy["noise"]["mean"],
                "judge_ci95": {
                    k: [round(v["ci_low"], 4), round(v["ci_high"], 4)] for k, v in accuracy.items()
                },
                "render_scenes_per_s_one_core": round(render_rate, 1),
                "sample_scenes_per_s_one_core": round(sample_rate, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
