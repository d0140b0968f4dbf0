"""Judge accuracy (clean, blurred, noisy, resampled renders), the text-to-image meter's floors
(what random noise and a flat grey image score, and the ground-truth renderer's ceiling) and render
throughput, as one JSON line.

python benchmarks/judge.py [--n 1000] [--render-n 5000] [--prompts 10]
"""

from __future__ import annotations

import argparse
import json
import os
import time

# One core, as the goal is stated per core.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from PIL import Image

from vlgpt.eval.geneval import evaluate_t2i, make_prompts, noise_floor
from vlgpt.eval.world_eval import judge_accuracy
from vlgpt.world import compare_scenes, judge
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render
from vlgpt.world.scene import Scene


def meter_floors(n_per_category: int) -> dict:
    """GenEval overall (and strict: no extra objects) of noise at several spreads, a grey image and
    the ground-truth renderer, on the same prompts."""
    prompts = make_prompts(n_per_category, seed=0)
    floors = {}
    for spread in (0.05, 0.25, 0.5, 1.0):
        result = noise_floor(judge, prompts, spreads=(spread,))
        floors[f"noise_sd{spread}"] = round(result["mean"], 4)
    grey = lambda p: Image.new("RGB", (64, 64), (128, 128, 128))
    oracle = lambda p: render(Scene.from_dict(p.scene))
    for name, draw in (("grey", grey), ("ground_truth", oracle)):
        result = evaluate_t2i(draw, judge, prompts)
        floors[name] = round(result["overall"]["mean"], 4)
        floors[f"{name}_strict"] = round(result["strict_overall"]["mean"], 4)
    return floors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test scenes judged per condition")
    parser.add_argument("--render-n", type=int, default=5000, help="scenes rendered for throughput")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=10, help="text-to-image prompts per category")
    args = parser.parse_args()

    world = ShapesWorld("test", args.size, args.size)
    scenes = [world.scene(i) for i in range(max(args.n, args.render_n))]
    accuracy = judge_accuracy(scenes[: args.n])

    # 32 -> 64 px bilinear resampling: a decoder's soft edges must not read as unreadable blobs.
    def resampled_render(scene: Scene) -> Image.Image:
        return render(scene).resize((32, 32), Image.BILINEAR).resize((64, 64), Image.BILINEAR)

    resampled = [compare_scenes(judge(resampled_render(s)), s)["exact"] for s in scenes[: args.n]]
    floors = meter_floors(args.prompts)
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
                "judge_resampled_32_to_64": float(np.mean(resampled)),
                "t2i_meter": floors,
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
