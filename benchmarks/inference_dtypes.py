"""Caption speed and agreement of one run loaded in fp32, bf16 and int8 weights (`--quantize int8`).

    python benchmarks/inference_dtypes.py --run runs/demo [--images 20] [--rounds 5]

Each round captions the same --images Shapes val scenes once per setting, the settings interleaved
so that a load change on the machine hits all of them alike; prints the median seconds per caption
of each setting, its ratio to fp32, and the share of captions identical to fp32's. Quality on the
test split: `vlgpt eval all --ckpt RUN --n 60 [--dtype bf16] [--quantize int8]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import vlgpt
from vlgpt.world.dataset import ShapesWorld

SETTINGS = {"fp32": {}, "bf16": {"dtype": "bf16"}, "int8": {"quantize": "int8"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a trained run folder")
    parser.add_argument("--images", type=int, default=20, help="val scenes captioned each round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    args = parser.parse_args()
    pipelines = {name: vlgpt.load(args.run, **kw) for name, kw in SETTINGS.items()}
    size = pipelines["fp32"].codec.image_size
    world = ShapesWorld("val", size, size)
    images = [world.image(world[i]) for i in range(args.images)]
    captions = {name: [p.caption(im) for im in images] for name, p in pipelines.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            for im in images:
                pipeline.caption(im)
            times[name].append((time.perf_counter() - start) / len(images))
    base = statistics.median(times["fp32"])
    for name in pipelines:
        median = statistics.median(times[name])
        same = sum(a == b for a, b in zip(captions[name], captions["fp32"])) / len(images)
        row = {"setting": name, "s_per_caption": round(median, 4), "vs_fp32": round(median / base, 3)}
        print(json.dumps({"benchmark": "inference_dtypes", **row, "same_caption_as_fp32": same}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
