"""`make demo`: data, training of every stage, evaluation and a report, reusing finished stages.

Each stage writes its outputs into the run folder and a `<stage>.done` marker last, so a rerun
skips what is finished and an interrupted stage starts over cleanly.

By default the run trains vlgpt's own pixel decoder (stage `decoder`). `--pretrained-decoder [PATH]`
draws instead through a pretrained diffusers decoder, imported frozen as VL-GPT imports Stable
Diffusion (without PATH the world's own, `pretrained/world-decoder/`, a latent diffusion model trained
once by `vlgpt train vae` and `vlgpt train diffusion`), so the demo's minutes go to what VL-GPT itself
trains: clip, tokenizer, pretrain, instruct.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .eval.formatting import table, write_json
from .world.dataset import ShapesWorld
from .world.render import render_grid


def _stage(run: Path, name: str) -> bool:
    """True when stage `name` already finished in `run`."""
    return (run / f"{name}.done").exists()


def _finish(run: Path, name: str, seconds: float) -> None:
    (run / f"{name}.done").write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")


def stage_world(run: Path, quick: bool) -> None:
    """Shapes-world datasets, a sample grid and the judge's report."""
    from .data.world_files import write_world
    from .eval.geneval import evaluate_t2i, make_prompts
    from .eval.world_eval import judge_accuracy
    from .world.judge import judge
    from .world.render import render
    from .world.scene import Scene

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
    oracle = lambda p: render(Scene.from_dict(p.scene))
    report = {
        "judge_accuracy": judge_accuracy([test.scene(i) for i in range(n_eval)]),
        "t2i_ground_truth_renderer": {k: v["mean"] for k, v in evaluate_t2i(oracle, judge, prompts).items()},
    }
    write_json(run / "judge_report.json", report)
    print(table("Judge report (Shapes test split; fully correct scenes)", report))
    print(f"sample grid: {run / 'world_grid.png'}  captions: {run / 'world_grid.txt'}")


# The world's decoder, trained once and shipped with the source (its card says how it was made).
PRETRAINED_DECODER = Path(__file__).resolve().parents[1] / "pretrained" / "world-decoder"


def _train(run: Path, stage: str, quick: bool, **kwargs) -> dict:
    from .train import train_stage

    stage_run = run / stage
    resume = (stage_run / "checkpoints").is_dir()  # an interrupted demo continues where it stopped
    return train_stage(stage, run, preset_name="tiny" if quick else "small", resume=resume, **kwargs)


def stage_image_codec(run: Path, quick: bool, decoder: Path | None = None) -> None:
    """The image tokenizer-detokenizer: train clip, train a pixel decoder (or import a pretrained one),
    train the tokenizer, then evaluate reconstruction."""
    from .core.checkpoint import CheckpointError
    from .eval.formatting import plot_curves
    from .eval.reconstruction import evaluate_reconstruction

    order = ("clip", "tokenizer", "decoder") if decoder is None else ("clip", "decoder", "tokenizer")
    if decoder is not None and not (decoder / "model_index.json").is_file():
        hint = " (it ships with the source: run from a checkout)" if decoder == PRETRAINED_DECODER else ""
        raise CheckpointError(
            f"{decoder} is not a diffusers decoder folder: model_index.json is missing{hint}. Pass a "
            "Stable Diffusion-layout folder, or leave out --pretrained-decoder to train one in the run"
        )
    for stage in order:
        if (run / stage / "model" / "metrics.json").is_file():
            print(f"[demo] {stage}: trained already")
            continue
        if stage == "decoder" and decoder is not None:
            print(f"[demo] decoder: importing the pretrained decoder, frozen ({decoder})")
            _train(run, stage, quick, decoder=decoder)
            continue
        _train(run, stage, quick)
    metrics = evaluate_reconstruction(run, n=60 if quick else 500, grid_path=run / "reconstructions.png")
    write_json(run / "eval_reconstruction.json", metrics)
    plot_curves(
        {
            s: run / s / "metrics.jsonl"
            for s in ("clip", "tokenizer", "decoder")
            if (run / s / "metrics.jsonl").is_file()
        },
        run / "loss_curves.png",
    )
    print(table("Reconstruction (Shapes val): judge agreement source vs reconstruction", metrics))
    print(f"reconstruction grid (source | reconstruction): {run / 'reconstructions.png'}")
    print(f"loss curves: {run / 'loss_curves.png'}")


def stage_vlgpt(run: Path, quick: bool) -> None:
    """VL-GPT: pretrain and instruction-tune the transformer, evaluate everything, write the report."""
    from .eval.formatting import plot_curves
    from .eval.full import evaluate_all, headline, headline_figures
    from .inference.pipeline import load

    for stage in ("pretrain", "instruct"):
        if (run / stage / "model" / "metrics.json").is_file():
            print(f"[demo] {stage}: trained already")
            continue
        _train(run, stage, quick)
    model = load(run)
    metrics = evaluate_all(model, n=12 if quick else 60)
    summary = headline_figures(metrics)  # each with its interval and n
    write_json(run / "metrics.json", {"headline": headline(metrics), **metrics})
    print(table("VL-GPT on the Shapes test split", summary))
    plot_curves(
        {
            s: run / s / "metrics.jsonl"
            for s in ("clip", "tokenizer", "decoder", "pretrain", "instruct")
            if (run / s / "metrics.jsonl").is_file()
        },
        run / "loss_curves.png",
        keys=("loss",),
    )
    write_report(run, model, summary, metrics)
    print(f"report: {run / 'report.html'}  metrics: {run / 'metrics.json'}")


def write_report(run: Path, model, summary: dict, metrics: dict) -> None:
    import html

    from PIL import Image

    from .eval.formatting import html_page, image_tag, metrics_table_html
    from .eval.full import report_examples

    ex = report_examples(model)
    card = lambda img, text: f'<div class="card">{image_tag(img, 3)}<br>{text}</div>'
    esc = html.escape
    sections = [
        "<h2>Headline metrics (Shapes test split)</h2>" + metrics_table_html(summary),
        "<h2>Captions</h2><div class='cards'>"
        + "".join(
            card(im, f"<b>model:</b> {esc(pred)}<br><b>truth:</b> {esc(ref)}")
            for im, pred, ref in ex["captions"]
        )
        + "</div>",
        "<h2>Questions</h2><div class='cards'>"
        + "".join(
            card(im, f"{esc(q)}<br><b>model:</b> {esc(a)} <b>truth:</b> {esc(t)}")
            for im, q, a, t in ex["vqa"]
        )
        + "</div>",
        "<h2>Drawings</h2><div class='cards'>"
        + "".join(card(im, esc(p)) for p, im in ex["drawings"])
        + "</div>",
        "<h2>Edits (before, after)</h2><div class='cards'>"
        + "".join(
            f'<div class="card">{image_tag(a, 3)} {image_tag(b, 3)}<br>{esc(t)}</div>'
            for a, t, b in ex["edits"]
        )
        + "</div>",
        "<h2>An interleaved answer</h2><p><i>User: Draw: a red circle and a blue star</i></p>"
        "<div class='card' style='width:auto'>"
        + "".join(esc(v) if k == "text" else image_tag(v, 3) for k, v in ex["interleaved"])
        + "</div>",
        "<h2>Image tokenizer–detokenizer: source | reconstruction</h2>"
        + image_tag(Image.open(run / "reconstructions.png").convert("RGB"), 1),
        "<h2>Training curves</h2>" + image_tag(Image.open(run / "loss_curves.png").convert("RGB"), 1),
        "<h2>All metrics</h2>" + metrics_table_html({k: v for k, v in metrics.items()}),
    ]
    (run / "report.html").write_text(html_page("vlgpt demo report", sections))


STAGES = [("world", stage_world), ("image_codec", stage_image_codec), ("vlgpt", stage_vlgpt)]


def run_demo(run: Path, quick: bool = False, decoder: Path | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    for name, fn in STAGES:
        if _stage(run, name):
            print(f"[demo] {name}: done already (delete {run / (name + '.done')} to redo)")
            continue
        print(f"[demo] {name}: {fn.__doc__.splitlines()[0]}")
        start = time.perf_counter()
        if fn is stage_image_codec:
            fn(run, quick, decoder)
        else:
            fn(run, quick)
        _finish(run, name, time.perf_counter() - start)
