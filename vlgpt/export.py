"""`vlgpt export RUN OUT`: one folder to hand to someone else.

    OUT/README.md              model card: metadata (library, pipeline tag), the recipe, the measured metrics
    OUT/chat_template.jinja    how a conversation becomes the text the model was trained on
    OUT/tokenizer.json         the BPE text tokenizer (an HF backbone's own is in its lm/ folder)
    OUT/<stage>/model/         the weights (safetensors) and config.json of the image side (clip,
                               tokenizer, decoder) and of the VL-GPT the run loads (instruct, else pretrain)
    OUT/<stage>/config.yaml    the stage's resolved recipe (`vlgpt train ... --config` reads it)
    OUT/eval/*.json            the run's evaluations, when it has them (the demo's test-set figures,
                               `metrics.json`, included)

Only finished models travel: no checkpoints, optimizer state or logs. `vlgpt.load(OUT)` and every
verb read the folder as they read the run. The folder is written beside OUT under a temporary name
and renamed into place when complete, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .core.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, fsync_tree, read_config
from .core.prompts import DESCRIBE, draw_prompt
from .core.text_tokenizer import BOS, EOS, IMG, IMG_END
from .data.sequences import ASSISTANT, USER

IMAGE_STAGES = ("clip", "tokenizer", "decoder")
LICENSE = "apache-2.0"  # the project's (pyproject.toml), as the Hugging Face card metadata spells it
# The run's evaluations: the demo's test-set figures, `vlgpt eval all`, `... reconstruction`, `... data`.
EVALUATIONS = ("metrics.json", "eval_all.json", "eval_reconstruction.json", "eval_data.json")

# The sequence `data.sequences.chat_segments` builds, as text: each image is [IMG], its N embeddings
# (from the image tokenizer, not text) and [/IMG]. Text pieces are tokenized one by one, so the
# template joins them without spaces.
CHAT_TEMPLATE = (
    f"{BOS}{{% for message in messages %}}"
    f"{{% if message['role'] == 'assistant' %}}{ASSISTANT}{{% else %}}{USER}{{% endif %}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    f"{{% if part['type'] == 'text' %}}{{{{ part['text'] }}}}{{% else %}}{IMG}<N image embeddings>{IMG_END}"
    "{% endif %}{% endfor %}{% endif %}"
    f"{{% if message['role'] == 'assistant' %}}{EOS}{{% endif %}}{{% endfor %}}"
    f"{{% if add_generation_prompt %}}{ASSISTANT}{{% endif %}}\n"
)


class ExportError(ValueError):
    """An export that cannot be written as asked; the message says what to do."""


def export_run(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    run, out = Path(run), Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is a file; choose a new folder for the export")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise ExportError(f"{out} is inside the run {run}; export to a folder outside it")
    for stage in IMAGE_STAGES:
        model = run / stage / "model"
        # Weights are model.safetensors, or an imported checkpoint's folder (--vision's hf/, --decoder's
        # diffusers/).
        weights = [model / WEIGHTS_FILE, model / "hf", model / "diffusers"]
        if not (model / CONFIG_FILE).is_file() or not any(w.exists() for w in weights):
            raise ExportError(
                f"{run} has no finished {stage} stage ({model} is missing); train it first: "
                f"`vlgpt train {stage} --out {run}`"
            )
    from .models.loading import find_vlgpt  # the models' modules only when exporting, not for `vlgpt --help`

    try:
        lm_model = find_vlgpt(run)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    lm_stage = lm_model.parent.name
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for stage in (*IMAGE_STAGES, lm_stage):
            shutil.copytree(run / stage / "model", staging / stage / "model")
            if (run / stage / "config.yaml").is_file():
                shutil.copy2(run / stage / "config.yaml", staging / stage / "config.yaml")
        evaluations = {}
        for name in EVALUATIONS:
            if (run / name).is_file():
                (staging / "eval").mkdir(exist_ok=True)
                shutil.copy2(run / name, staging / "eval" / name)
                evaluations[name] = json.loads((run / name).read_text())
        if (lm_model / "tokenizer.json").is_file():
            shutil.copy2(lm_model / "tokenizer.json", staging / "tokenizer.json")
        (staging / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        (staging / "README.md").write_text(model_card(run, staging, lm_stage, evaluations))
        fsync_tree(staging)  # on disk, each file with the usual mode (older runs' weights are 0600)
        if out.exists():
            old = out.parent / f".{out.name}.replaced"
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def model_card(run: Path, folder: Path, lm_stage: str, evaluations: dict) -> str:
    """README.md with Hugging Face-style metadata, the recipe of every stage and the measured figures."""
    lm_config = read_config(folder / lm_stage / "model")
    backbone = "a Hugging Face causal LM" if lm_config.get("backbone") == "hf" else "vlgpt's own transformer"
    decoder = read_config(folder / "decoder" / "model")
    size = decoder.get("image_size") or (decoder.get("config") or {}).get("image_size", "?")
    drawn_by = ""
    if decoder.get("backbone") == "diffusers":
        pipeline = decoder.get("pipeline", "diffusers pipeline")
        drawn_by = f" Pictures are drawn by a frozen {pipeline} (`decoder/model/diffusers/`)."
    lines = [
        "---",
        f"license: {LICENSE}",
        "library_name: vlgpt",
        "pipeline_tag: any-to-any",
        "tags:",
        "  - vlgpt",
        "  - vision-language",
        "  - image-to-text",
        "  - text-to-image",
        "  - safetensors",
        "---",
        "",
        f"# {run.name}: a VL-GPT model",
        "",
        "One transformer that reads and writes text and images (VL-GPT): captions, answers questions "
        f"about images, draws from text and edits images. {size}x{size} images, {backbone}, exported "
        f"from the run `{run}` with `vlgpt export`.{drawn_by}",
        "",
        "## Use",
        "",
        "```python",
        "import vlgpt",
        'model = vlgpt.load("path/to/this/folder")   # device="cuda", dtype="bf16" on a GPU',
        'model.caption("scene.png")',
        'model.ask("scene.png", "What color is the star?")',
        f'model.imagine("a red circle")   # the chat asks "{draw_prompt("a red circle")}"',
        "```",
        "",
        f"`vlgpt caption IMAGE --ckpt FOLDER`, `vlgpt serve --ckpt FOLDER` and the other verbs read it "
        f'too. Captions are asked for with "{DESCRIBE}"; `chat_template.jinja` shows how a '
        "conversation becomes the sequence the model was trained on.",
        "",
        "## Training recipe",
        "",
        "Each stage's resolved recipe is in `<stage>/config.yaml`; retrain one with "
        "`vlgpt train STAGE --config <stage>/config.yaml --out RUN`.",
        "",
        "| stage | steps | batch | lr | LoRA rank |",
        "|---|---|---|---|---|",
    ]
    for stage in (*IMAGE_STAGES, lm_stage):
        recipe = _recipe(folder / stage / "config.yaml")
        lines.append(
            f"| {stage} | {recipe.get('steps', '?')} | {recipe.get('batch_size', '?')} | "
            f"{recipe.get('lr', '?')} | {recipe.get('lora_rank', '?')} |"
        )
    lines += ["", "## Measured", ""]
    figures = []
    for stage in (*IMAGE_STAGES, lm_stage):
        metrics_file = folder / stage / "model" / "metrics.json"
        if metrics_file.is_file():
            for key, value in json.loads(metrics_file.read_text()).items():
                if isinstance(value, (int, float)) and key not in ("step", "skipped_steps"):
                    figures.append((f"{stage}: {key}", value))
    for name, metrics in evaluations.items():
        for key, value in _headline(metrics).items():
            point = value.get("mean") if isinstance(value, dict) else value  # a figure or its summary
            if isinstance(point, (int, float)) and not isinstance(point, bool):
                figures.append((f"{name.removesuffix('.json')}: {key}", value))
    if figures:
        lines += ["| figure | value | 95% interval | n |", "|---|---|---|---|"]
        lines += [f"| {key} | {_figure(value)} |" for key, value in figures]
        lines += [
            "",
            "Stage figures are each stage's own evaluation on held-out rows at the end of training.",
        ]
    else:
        lines.append("No evaluation was recorded in the run.")
    return "\n".join(lines) + "\n"


def _headline(metrics: dict) -> dict:
    """An evaluation's figures for the card, with their intervals where the file has them: the
    Shapes evaluation's (`metrics.json`, `eval_all.json`) through `headline_figures`, another file's
    `headline`, or its top-level figures (`eval_reconstruction.json`)."""
    if "captioning" in metrics:
        from .eval.full import headline_figures

        return headline_figures(metrics)
    return metrics.get("headline") or metrics


def _figure(value) -> str:
    """A measured value as table cells: value | interval | n (the last two blank where unknown)."""
    if not isinstance(value, dict):
        return f"{value:.4g} |  | "
    low, high = value.get("ci_low"), value.get("ci_high")
    interval = f"[{low:.4g}, {high:.4g}]" if low is not None and high is not None else ""
    return f"{value['mean']:.4g} | {interval} | {value.get('n', '')}"


def _recipe(path: Path) -> dict:
    """The train: section of a stage's config.yaml, or {} when the run predates it."""
    if not path.is_file():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return data.get("train", {}) if isinstance(data, dict) else {}
