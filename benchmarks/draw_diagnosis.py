"""Where text-to-image fails: the plan, the image head, or the pixel decoder.

    python benchmarks/draw_diagnosis.py --run runs/demo --n 10   # 10 prompts a GenEval category
    python benchmarks/draw_diagnosis.py --run runs/demo --n 2 --show   # and each prompt's plan and drawing

A drawing is made in three links: the transformer writes a layout plan ("Layout: large red cross at
3 3."), its image head regresses the N embeddings of the image the plan pins down, and the pixel
decoder renders them. For each of `make_prompts(n)` the benchmark scores, with the world's judge:

- plan: does the plan, read as a scene (each object at its layout cell's centre), satisfy the prompt;
- drawn: does the drawing satisfy it (what `vlgpt eval all` scores as text-to-image);
- drawn = plan: does the drawing show the plan's objects (count, colours, shapes, `compare_scenes`);
- plan rendered: the plan's scene rendered exactly, encoded to z and decoded back (a perfect image
  head's drawing): does it satisfy the prompt, and show the plan's objects.

So "plan" bounds what any drawing can earn from the model's plans, "plan rendered" what a perfect
image head would draw from them with this codec, and "drawn = plan" how far the image head is from
perfect.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

from vlgpt.core.prompts import draw_prompt
from vlgpt.eval.geneval import CATEGORIES, make_prompts, score_prompt
from vlgpt.inference.generate import SamplingConfig
from vlgpt.inference.pipeline import load
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.language import LAYOUT_GRID
from vlgpt.world.render import render
from vlgpt.world.scene import COLORS, SHAPES, SIZES, Scene, ShapeObject

PLANNED = re.compile(rf"\b({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) at (\d+) (\d+)")


def plan_scene(text: str, side: int = 64) -> Scene:
    """The objects a layout plan names, each at the centre of its cell (unreadable parts skipped)."""
    cell = side / LAYOUT_GRID
    objects = [
        ShapeObject(shape, color, size, (int(x) + 0.5) * cell, (int(y) + 0.5) * cell)
        for size, color, shape, x, y in PLANNED.findall(text)
        if int(x) < LAYOUT_GRID and int(y) < LAYOUT_GRID
    ]
    return Scene(objects=tuple(objects), width=side, height=side)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder (or its instruct model folder)")
    parser.add_argument("--n", type=int, default=10, help="prompts a GenEval category")
    parser.add_argument("--show", action="store_true", help="print each prompt, its plan and what was drawn")
    args = parser.parse_args()
    pipe = load(args.run)
    rows = defaultdict(lambda: defaultdict(list))
    for prompt in make_prompts(args.n, seed=0):
        segments = pipe.segments(
            [{"role": "user", "content": [{"type": "text", "text": draw_prompt(prompt.description)}]}]
        )
        out = pipe.generator.generate(segments, SamplingConfig(), require_image=True, stop_after_image=True)
        plan = plan_scene(out.text)
        drawn = judge(out.images[0])
        redrawn = judge(pipe.codec.reconstruct([render(plan)])[0]) if plan.objects else None
        agree = compare_scenes(drawn, plan)
        agree_redrawn = compare_scenes(redrawn, plan) if redrawn is not None else {}
        row = rows[prompt.category]
        row["plan"].append(score_prompt(prompt, plan) if plan.objects else 0.0)
        row["drawn"].append(score_prompt(prompt, drawn))
        row["plan rendered"].append(score_prompt(prompt, redrawn) if redrawn is not None else 0.0)
        for key in ("count", "colors", "shapes"):
            row[f"drawn = plan: {key}"].append(float(agree.get(key, False)))
            row[f"plan rendered = plan: {key}"].append(float(agree_redrawn.get(key, False)))
        if args.show:
            said = ", ".join(f"{o.size} {o.color} {o.shape}" for o in drawn.objects) or "nothing"
            print(f"{prompt.category:13s} {prompt.description!r}\n  {out.text}\n  drawn: {said}")
    keys = list(next(iter(rows.values())))
    print(f"{'':34s}" + "".join(f"{c[:12]:>13s}" for c in CATEGORIES if c in rows) + f"{'all':>8s}")
    for key in keys:
        values = [rows[c][key] for c in CATEGORIES if c in rows]
        every = [v for vs in values for v in vs]
        print(
            f"{key:34s}"
            + "".join(f"{sum(v) / len(v):13.2f}" for v in values)
            + f"{sum(every) / len(every):8.2f}"
        )


if __name__ == "__main__":
    main()
