"""Reports a person reads: a table on the terminal, JSON on disk, an HTML page in the browser."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image


def fmt_metric(value: dict | float) -> str:
    """ "0.912 [0.88, 0.94] n=300" for a summary dict, plain for a number."""
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}] n={value['n']}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metric_rows(metrics: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted name, formatted value) for every number or summary in a nested metrics dict."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and "mean" not in value:
            rows += metric_rows(value, name)
        elif isinstance(value, (dict, float, int)) and not isinstance(value, bool):
            rows.append((name, fmt_metric(value)))
    return rows


def table(title: str, metrics: dict) -> str:
    """A two-column text table of a (possibly nested) metrics dict."""
    rows = metric_rows(metrics)
    width = max((len(name) for name, _ in rows), default=10)
    lines = [title, "-" * max(len(title), width + 30)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def image_tag(image: Image.Image, scale: int = 2, alt: str = "") -> str:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'


PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta name="generator" content="{generator}">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
h1,h2{{font-weight:600}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}
.cards{{display:flex;flex-wrap:wrap;gap:12px}}
.card{{border:1px solid #ddd;border-radius:6px;padding:8px;width:200px;font-size:13px}}
img{{image-rendering:pixelated;max-width:100%;height:auto}}
pre{{background:#f6f6f6;padding:8px;overflow:auto}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def html_page(title: str, sections: list[str], generator: str = "vlgpt") -> str:
    """A self-contained page; `generator` names what wrote it (`vlgpt report` reads it back to know
    whether a page is its own to replace)."""
    return PAGE.format(title=html.escape(title), generator=html.escape(generator), body="\n".join(sections))


def metrics_table_html(metrics: dict) -> str:
    """A metric table; the value column names the interval only where a row has one (a stage's own
    evaluation is one number, an `eval` figure a bootstrap summary)."""
    listed = metric_rows(metrics)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>" for name, value in listed
    )
    header = "value [95% CI] n" if any(" n=" in value for _, value in listed) else "value"
    return f"<table><tr><th>metric</th><th>{header}</th></tr>{rows}</table>"


def plot_curves(metrics_files: dict[str, Path], out: Path, keys: tuple[str, ...] = ("loss",)) -> Path:
    """One panel per stage: training curves from each stage's metrics.jsonl, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {name: path for name, path in metrics_files.items() if Path(path).is_file()}
    cols = min(max(len(stages), 1), 3)  # rows of three panels: the page stays within 1,200 px
    rows = -(-max(len(stages), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(stages) :]:
        ax.set_visible(False)
    for ax, (name, path) in zip(axes.flat, stages.items()):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
