"""Visual contrastive decoding on and off: POPE per sampler, CHAIR and caption F1, and what it costs.

    python benchmarks/contrastive_decoding.py runs/demo --n 60 --alphas 0.5,1
    python benchmarks/contrastive_decoding.py runs/demo --json /tmp/vcd.json

Every setting reads the same n Shapes test scenes: captions (CHAIR, attribute F1) and POPE's yes/no
probes for objects present and absent. `seconds/caption` is the median time of one caption, measured
in the same process for every setting, so the ratios compare (the figures themselves depend on the
machine). POPE's floors ("always yes" F1 0.667, yes-ratio 1) are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vlgpt
from vlgpt.eval.hallucination import SAMPLERS, evaluate_chair, evaluate_pope
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.language import caption_attribute_scores
from vlgpt.world.render import render
from vlgpt.world.scene import Scene


def measure(model, scenes, training, options: dict) -> dict:
    captions, seconds = [], []
    for scene in scenes:
        start = time.perf_counter()
        captions.append(model.caption(render(scene), max_new_tokens=48, **options))
        seconds.append(time.perf_counter() - start)
    pope = evaluate_pope(lambda im, q: model.ask(im, q, max_new_tokens=3, **options), scenes, training)
    chair = evaluate_chair(captions, scenes)
    f1 = statistics.fmean(caption_attribute_scores(c, s)["f1"] for c, s in zip(captions, scenes))
    row = {f"pope_{s}_f1": pope[s]["f1"]["mean"] for s in SAMPLERS}
    row |= {f"pope_{s}_yes": pope[s]["yes_ratio"]["mean"] for s in SAMPLERS}
    row |= {
        "chair_i": chair["chair_i"]["mean"],
        "chair_s": chair["chair_s"]["mean"],
        "caption_f1": f1,
        "seconds_per_caption": statistics.median(seconds),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=60, help="test scenes")
    parser.add_argument(
        "--alphas", default="0.5,1", help="contrast strengths to try (beside standard decoding)"
    )
    parser.add_argument("--beta", type=float, default=0.1, help="the plausibility cut-off")
    parser.add_argument("--json", help="write the table here too")
    args = parser.parse_args()

    model = vlgpt.load(args.run)
    size = model.codec.image_size
    test, train = ShapesWorld("test", size, size), ShapesWorld("train", size, size)
    scenes = [Scene.from_dict(test[i]["scene"]) for i in range(args.n)]
    training = [Scene.from_dict(train[i]["scene"]) for i in range(2000)]
    rows = {"standard": measure(model, scenes, training, {})}
    for alpha in (float(a) for a in args.alphas.split(",")):
        options = {"decoding": "vcd", "vcd_alpha": alpha, "vcd_beta": args.beta}
        rows[f"vcd alpha={alpha:g}"] = measure(model, scenes, training, options)
    base = rows["standard"]["seconds_per_caption"]
    for row in rows.values():
        row["time_vs_standard"] = row["seconds_per_caption"] / base
    names = list(rows)
    print("| figure | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for key in rows["standard"]:
        print(f"| {key} | " + " | ".join(f"{rows[n][key]:.3f}" for n in names) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
