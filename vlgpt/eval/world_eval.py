"""Scoring captions, answers, edits and the judge itself on Shapes-world rows.

Every function takes the system under test as a callable, so the same code scores a trained
model, the ground truth (which must score 1) and a broken baseline (which must score 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image, ImageFilter

from ..world.judge import compare_scenes, judge
from ..world.language import caption_attribute_scores
from ..world.render import render
from ..world.scene import Scene
from .hallucination import evaluate_chair
from .text_metrics import caption_scores, summarize, vqa_accuracy


def evaluate_captions(caption: Callable[[Image.Image], str], rows: list[dict]) -> dict:
    """Attribute precision/recall/F1 through the caption parser, plus BLEU-4, CIDEr and ROUGE-L, and
    CHAIR (the kinds of object the captions name that the images do not hold)."""
    predictions, references, attrs = [], [], {"precision": [], "recall": [], "f1": []}
    scenes = [Scene.from_dict(row["scene"]) for row in rows]
    for row, scene in zip(rows, scenes):
        text = caption(render(scene))
        predictions.append(text)
        references.append(row["references"])
        for key, value in caption_attribute_scores(text, scene).items():
            attrs[key].append(value)
    text_scores = caption_scores(predictions, references)
    result = {f"attribute_{k}": summarize(v) for k, v in attrs.items()}
    for key in ("bleu4", "cider", "rougeL"):
        result[key] = text_scores[key]  # the corpus score coco-caption reports, and its interval
    result["text_metric_backend"] = text_scores["backend"]
    result["chair"] = evaluate_chair(predictions, scenes)
    result["examples"] = [
        {"id": r["id"], "prediction": p, "reference": r["caption"]} for r, p in zip(rows[:8], predictions[:8])
    ]
    return result


def evaluate_vqa(answer: Callable[[Image.Image, str], str], rows: list[dict]) -> dict:
    """VQA accuracy (official answer normalization), overall and per question kind."""
    by_kind: dict[str, list[float]] = {}
    everything = []
    for row in rows:
        image = render(Scene.from_dict(row["scene"]))
        for qa in row["questions"]:
            score = vqa_accuracy([answer(image, qa["question"])], [qa["answer"]])[0]
            by_kind.setdefault(qa["kind"], []).append(score)
            everything.append(score)
    result = {"overall": summarize(everything)}
    result.update({kind: summarize(v) for kind, v in sorted(by_kind.items())})
    return result


def edit_correct(judged: Scene, target: Scene, kind: str) -> bool:
    """An edit is right when the judged result has the target's objects (kinds, sizes, count),
    and, for a move, every object where the target puts it."""
    checks = compare_scenes(judged, target)
    ok = checks["count"] and checks["kinds"] and checks["sizes"]
    return ok and (checks["positions"] if kind == "move" else True)


def evaluate_edits(
    edit: Callable[[Image.Image, str], Image.Image | str],
    rows: list[dict],
    judge_fn: Callable[[Image.Image], Scene] = judge,
) -> dict:
    """Editing accuracy by kind; an edit answered in words (a refusal, a str) scores 0, and
    `wrongly_refused` is the share of these possible edits that were."""
    by_kind: dict[str, list[float]] = {}
    everything, refused = [], []
    for row in rows:
        if not row.get("edit"):
            continue
        source = render(Scene.from_dict(row["scene"]))
        result = edit(source, row["edit"]["instruction"])
        refused.append(float(isinstance(result, str)))
        score = (
            0.0
            if refused[-1]
            else float(
                edit_correct(judge_fn(result), Scene.from_dict(row["edit"]["target"]), row["edit"]["kind"])
            )
        )
        by_kind.setdefault(row["edit"]["kind"], []).append(score)
        everything.append(score)
    result = {"overall": summarize(everything), "wrongly_refused": summarize(refused)}
    result.update({kind: summarize(v) for kind, v in sorted(by_kind.items())})
    return result


def evaluate_impossible_edits(
    edit: Callable[[Image.Image, str], Image.Image | str], rows: list[dict]
) -> dict:
    """The share of edit requests that cannot be made (the world's `impossible_edit`: an object that
    is not there, or a change to what already is) that the model declines in words, by kind, and the
    share of those refusals that give the world's own reason word for word."""
    by_kind: dict[str, list[float]] = {}
    everything, exact, examples = [], [], []
    for row in rows:
        impossible = row.get("impossible_edit")
        if not impossible:
            continue
        result = edit(render(Scene.from_dict(row["scene"])), impossible["instruction"])
        declined = isinstance(result, str)
        everything.append(float(declined))
        exact.append(float(declined and result.strip() == impossible["reply"]))
        by_kind.setdefault(impossible["kind"], []).append(float(declined))
        if len(examples) < 6:
            examples.append(
                {"instruction": impossible["instruction"], "answer": result if declined else "<image>"}
            )
    result = {"refused": summarize(everything), "reason_exact": summarize(exact)}
    result.update({kind: summarize(v) for kind, v in sorted(by_kind.items())})
    result["examples"] = examples
    return result


def gaussian_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32) / 255.0
    return np.clip(array + rng.normal(0.0, sigma, size=array.shape), 0.0, 1.0)


def judge_accuracy(
    scenes: Iterable[Scene], blur_sigma: float = 1.0, noise_sigma: float = 0.05, seed: int = 0
) -> dict:
    """Share of scenes the judge reads fully correctly: clean, blurred and noisy renders."""
    rng = np.random.default_rng(seed)
    corrupt = {
        "clean": lambda im: im,
        "blur": lambda im: im.filter(ImageFilter.GaussianBlur(blur_sigma)),
        "noise": lambda im: gaussian_noise(im, noise_sigma, rng),
    }
    scores: dict[str, list[float]] = {name: [] for name in corrupt}
    for scene in scenes:
        image = render(scene)
        for name, fn in corrupt.items():
            scores[name].append(float(compare_scenes(judge(fn(image)), scene)["exact"]))
    return {name: summarize(v) for name, v in scores.items()}
