"""`vlgpt report RUN [--data DIR]`: an HTML report for any run, custom data included.

The demo writes its own report on Shapes; this one reads what a run folder holds — every stage's
training curves and final metrics, any `eval_*.json` beside them — and shows the model at work on
examples: the first images of `--data` (captions against their references, each assistant turn of a
conversation against the dataset's answer), or Shapes val scenes when no data is given, with a
drawing from each reference caption.
"""

from __future__ import annotations

import html
import json
from itertools import islice
from pathlib import Path

from ..core.presets import STAGES
from ..data.formats import read_examples
from .data_eval import question_turns
from .formatting import html_page, image_tag, metrics_table_html, plot_curves
from .full import headline_figures

esc = html.escape


def _card(image, text: str) -> str:
    return f'<div class="card">{image_tag(image, 3)}<br>{text}</div>'


def _data_examples(model, data: str | Path, n: int) -> list[str]:
    cards = []
    for example in islice(read_examples(data), n):
        images = example.load_images()
        if example.caption and len(images) == 1:
            said = model.caption(images[0], max_new_tokens=48)
            cards.append(
                _card(images[0], f"<b>model:</b> {esc(said)}<br><b>reference:</b> {esc(example.caption)}")
            )
        for messages, answer in islice(question_turns(example), 2):
            question = " ".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")
            said = model.chat(messages, max_new_tokens=24).text
            shown = next((p["image"] for m in messages for p in m["content"] if p["type"] == "image"), None)
            text = f"{esc(question)}<br><b>model:</b> {esc(said)} <b>truth:</b> {esc(answer)}"
            cards.append(_card(shown, text) if shown is not None else f'<div class="card">{text}</div>')
        if example.caption:
            cards.append(_card(model.imagine(example.caption), f"<b>drawn from:</b> {esc(example.caption)}"))
    return cards


def _world_examples(model, n: int) -> list[str]:
    from ..world.dataset import ShapesWorld

    size = model.codec.image_size
    world = ShapesWorld("val", size, size)
    cards = []
    for index in range(n):
        row = world[index]
        image = world.image(row)
        said = model.caption(image, max_new_tokens=48)
        cards.append(_card(image, f"<b>model:</b> {esc(said)}<br><b>reference:</b> {esc(row['caption'])}"))
        if row["questions"]:
            qa = row["questions"][index % len(row["questions"])]
            said = model.ask(image, qa["question"], max_new_tokens=8)
            text = f"{esc(qa['question'])}<br><b>model:</b> {esc(said)} <b>truth:</b> {esc(qa['answer'])}"
            cards.append(_card(image, text))
        cards.append(_card(model.imagine(row["caption"]), f"<b>drawn from:</b> {esc(row['caption'])}"))
    return cards


GENERATOR = "vlgpt report"


def report_path(run: Path) -> Path:
    """Where `vlgpt report` writes by default: RUN/report.html, unless something else wrote that page
    (the demo's report, with its questions, edits and reconstructions), then RUN/run_report.html."""
    page = run / "report.html"
    if page.is_file():
        with open(page, encoding="utf-8", errors="replace") as handle:
            head = handle.read(600)  # the meta tag is in the first line; the page may be megabytes
        if f'<meta name="generator" content="{GENERATOR}">' not in head:
            return run / "run_report.html"
    return page


def write_run_report(
    run: str | Path, data: str | Path | None = None, n: int = 8, out: str | Path | None = None
) -> Path:
    """An HTML report of the run at `out` (default: `report_path(run)`); `data`: a dataset (any
    format) whose first `n` examples are shown."""
    from ..inference.pipeline import load

    run = Path(run)
    sections = []
    stage_metrics = {
        stage: json.loads((run / stage / "model" / "metrics.json").read_text())
        for stage in STAGES
        if (run / stage / "model" / "metrics.json").is_file()
    }
    if stage_metrics:
        sections.append("<h2>Final evaluation of each stage</h2>" + metrics_table_html(stage_metrics))
    for path in sorted(run.glob("eval_*.json")):
        figures = json.loads(path.read_text())
        if "captioning" in figures:  # eval_all.json: its headline with intervals
            figures = headline_figures(figures)
        sections.append(f"<h2>{esc(path.name)}</h2>" + metrics_table_html(figures.get("headline", figures)))
    curves = {s: run / s / "metrics.jsonl" for s in STAGES if (run / s / "metrics.jsonl").is_file()}
    if curves:
        from PIL import Image

        png = plot_curves(curves, run / "loss_curves.png")
        sections.append("<h2>Training curves</h2>" + image_tag(Image.open(png).convert("RGB"), 1))
    model = load(run)
    cards = _data_examples(model, data, n) if data else _world_examples(model, n)
    where = esc(str(data)) if data else "Shapes val"
    sections.insert(0, f"<h2>Examples ({where})</h2><div class='cards'>" + "".join(cards) + "</div>")
    out = Path(out) if out else report_path(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page(f"vlgpt report: {run.name}", sections, GENERATOR))
    return out
