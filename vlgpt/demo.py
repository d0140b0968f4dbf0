"""`make demo`: data, training of every stage, evaluation and a report, reusing finished stages.

Each stage writes its outputs into the run folder and a `<stage>.done` marker last, so a rerun
skips what is finished and an interrupted stage starts over cleanly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .report import table, write_json
from .world.dataset import ShapesWorld
from .world.render import render_grid


def _stage(run: Path, name: str) -> bool:
    """True when stage `name` already finished in `run`."""
    return (run / f"{name}.done").exists()


def _finish(run: Path, name: str, seconds: float) -> None:
    (run / f"{name}.done").write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")


def stage_world(run: Path, quick: bool) -> None:
    """Shapes-world datasets, a sample grid and the judge's report."""
    from .eval.geneval import evaluate_t2i, make_prompts
    from .eval.world_eval import judge_accuracy
    from .world.export import write_world
    from .world.judge import judge
    from .world.scene import Scene
    from .world.render import render

    n_train, n_eval = (200, 60) if quick else (2000, 300)
    write_world(run / "data" / "train", n_train, split="train", overwrite=True)
    write_world(run / "data" / "val", n_eval, split="val", overwrite=True)
    world = ShapesWorld("train")
    grid = render_grid([world.image(world[i]) for i in range(32)], columns=8, scale=2)
    grid.save(run / "world_grid.png")
    captions = [f"{i:2d}. {world[i]['caption']}" for i in range(32)]
    (run / "world_grid.txt").write_text("\n".join(captions) + "\n")

    test = ShapesWorld("test")
    prompts = make_prompts(n_per_category=10 if quick else 50)
    oracle = lambda p: render(Scene.from_dict(p.scene))  # noqa: E731
    report = {
        "judge_accuracy": judge_accuracy([test.scene(i) for i in range(n_eval)]),
        "t2i_ground_truth_renderer": {k: v["mean"] for k, v in evaluate_t2i(oracle, judge, prompts).items()},
    }
    write_json(run / "judge_report.json", report)
    print(table("Judge report (Shapes test split; fully correct scenes)", report))
    print(f"sample grid: {run / 'world_grid.png'}  captions: {run / 'world_grid.txt'}")


def _train(run: Path, stage: str, quick: bool) -> dict:
    from .train import train_stage

    stage_run = run / stage
    resume = (stage_run / "checkpoints").is_dir()  # an interrupted demo continues where it stopped
    return train_stage(stage, run, preset_name="tiny" if quick else "small", resume=resume)


def stage_image_codec(run: Path, quick: bool) -> None:
    """The image tokenizer-detokenizer: train clip, tokenizer and decoder, then evaluate reconstruction."""
    from .eval.reconstruction import evaluate_reconstruction
    from .report import plot_curves

    for stage in ("clip", "tokenizer", "decoder"):
        if (run / stage / "model" / "metrics.json").is_file():
            print(f"[demo] {stage}: trained already")
            continue
        _train(run, stage, quick)
    metrics = evaluate_reconstruction(run, n=60 if quick else 500, grid_path=run / "reconstructions.png")
    write_json(run / "eval_reconstruction.json", metrics)
    plot_curves({s: run / s / "metrics.jsonl" for s in ("clip", "tokenizer", "decoder")}, run / "loss_curves.png")
    print(table("Reconstruction (Shapes val): judge agreement source vs reconstruction", metrics))
    print(f"reconstruction grid (source | reconstruction): {run / 'reconstructions.png'}")
    print(f"loss curves: {run / 'loss_curves.png'}")


STAGES = [("world", stage_world), ("image_codec", stage_image_codec)]


def run_demo(run: Path, quick: bool = False) -> None:
    run.mkdir(parents=True, exist_ok=True)
    for name, fn in STAGES:
        if _stage(run, name):
            print(f"[demo] {name}: done already (delete {run / (name + '.done')} to redo)")
            continue
        print(f"[demo] {name}: {fn.__doc__.splitlines()[0]}")
        start = time.perf_counter()
        fn(run, quick)
        _finish(run, name, time.perf_counter() - start)
