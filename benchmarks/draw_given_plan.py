"""The image head alone: draw held-out scenes from their true layout plan, and judge the drawings.

    python benchmarks/draw_given_plan.py --run runs/demo --n 100
    python benchmarks/draw_given_plan.py --run runs/demo --models pretrain/checkpoints/step-000400 pretrain
    python benchmarks/draw_given_plan.py --run runs/demo --models instruct --head-guidance 1 2 3

A text-to-image answer is a plan, then an image drawn from it (benchmarks/draw_diagnosis.py splits
the links). Here the plan is not the model's: each validation scene's caption and exact layout are
written into the prompt as pretraining writes them ("An image of <caption>. Layout: ... [IMG]") and
the model only draws. The judge then reads the drawing against the scene itself, so the figures
measure the image head (with the decoder) and nothing of the plan, whatever a lever did to how the
model plans. Beside each model:

- floor: the same drawings judged against *another* scene of the split (what a drawing that ignores
  its plan scores);
- codec: the scene rendered, encoded and decoded (what a perfect image head would earn with this
  decoder).

--models takes stage names (pretrain, instruct) or checkpoint folders
(RUN/pretrain/checkpoints/step-000400), each relative to the run or absolute.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vlgpt.core.checkpoint import load_weights
from vlgpt.core.prompts import t2i_prompt
from vlgpt.data import sequences as S
from vlgpt.eval.text_metrics import summarize
from vlgpt.inference.generate import SamplingConfig
from vlgpt.inference.pipeline import load
from vlgpt.world import language
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.render import render

ASPECTS = ("count", "colors", "shapes", "sizes", "positions", "exact")


def model_folder(run: Path, name: str) -> tuple[Path, Path | None]:
    """(a stage's model folder to build from, a checkpoint folder whose weights replace its own)."""
    path = Path(name) if Path(name).is_absolute() else run / name
    if path.parent.name == "checkpoints":
        return path.parent.parent / "model", path
    return (path / "model" if (path / "model").is_dir() else path), None


def agreement(results: list[dict]) -> dict[str, float]:
    return {a: summarize([float(r[a]) for r in results])["mean"] for a in ASPECTS}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", required=True, help="run folder (clip, tokenizer, decoder and the LM stages)"
    )
    parser.add_argument("--models", nargs="+", default=["pretrain", "instruct"])
    parser.add_argument("--n", type=int, default=100, help="validation scenes")
    parser.add_argument("--head-guidance", type=float, nargs="+", default=[1.0])
    args = parser.parse_args()
    run = Path(args.run)
    rows, scenes = [], None
    for name in args.models:
        folder, checkpoint = model_folder(run, name)
        pipe = load(folder)
        if checkpoint is not None:
            load_weights(checkpoint, pipe.model)
        if scenes is None:  # the scenes and the codec's figures are the run's, not the model's
            size = pipe.codec.image_size
            world = ShapesWorld("val", size, size)
            scenes = [world.scene(i) for i in range(args.n)]
            captions = [language.captions(s, np.random.default_rng(i))[0] for i, s in enumerate(scenes)]
            redrawn = pipe.codec.reconstruct([render(s) for s in scenes])
            rows.append(
                (
                    "codec (a perfect head)",
                    agreement([compare_scenes(judge(im), s) for im, s in zip(redrawn, scenes)]),
                )
            )
        for guidance in args.head_guidance:
            start, drawn = time.perf_counter(), []
            for scene, caption in zip(scenes, captions):
                segments = [S.text(t2i_prompt(caption)), S.text(" " + language.layout(scene))]
                out = pipe.generator.generate(
                    segments, SamplingConfig(head_guidance=guidance), force_image=True, stop_after_image=True
                )
                drawn.append(judge(out.images[0]))
            label = f"{name}" + (f", guidance {guidance:g}" if len(args.head_guidance) > 1 else "")
            rows.append((label, agreement([compare_scenes(d, s) for d, s in zip(drawn, scenes)])))
            shifted = scenes[1:] + scenes[:1]
            rows.append(
                ("  floor (another scene)", agreement([compare_scenes(d, s) for d, s in zip(drawn, shifted)]))
            )
            print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\n{args.n} validation scenes drawn from their true plan")
    print(f"{'':34s}" + "".join(f"{a:>10s}" for a in ASPECTS))
    for label, figures in rows:
        print(f"{label:34s}" + "".join(f"{figures[a]:10.2f}" for a in ASPECTS))


if __name__ == "__main__":
    main()
