"""Does the model see things that are not there? POPE and CHAIR, read exactly on the Shapes world.

* **POPE** (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models"): yes/no
  probes "Is there a red star?" for objects present in each test image and, as many, for objects
  absent, drawn by three samplers: `random` (any absent kind), `popular` (the kinds most frequent in
  training) and `adversarial` (the kinds that co-occur most in training with those present). Accuracy,
  precision, recall and F1 of "yes" (the positive class is "present"), and the yes-ratio, each with
  its bootstrap interval, beside what "always yes" and "always no" score on the same probes.
* **CHAIR** (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"): of the object kinds a
  caption names, the share the image does not hold (CHAIR_i, over all mentions of the corpus), and the
  share of captions that name at least one such kind (CHAIR_s). The world's caption parser reads the
  mentions; a kind is a (colour, shape) pair, or a shape where the caption gives no colour.

An object kind is what the world's existence questions ask about: a colour and a shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
from PIL import Image

from ..world.language import article, parse_caption
from ..world.render import render
from ..world.scene import COLORS, SHAPES, Scene
from .text_metrics import normalize_vqa_answer, summarize

KINDS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
SAMPLERS = ("random", "popular", "adversarial")
PROBES_PER_IMAGE = 3  # POPE asks about 3 present objects and 3 absent ones per image


def kinds_of(scene: Scene) -> set[tuple[str, str]]:
    return {(o.color, o.shape) for o in scene.objects}


def training_statistics(scenes: Sequence[Scene]) -> tuple[Counter, Counter]:
    """How often each object kind appears in training scenes (once per scene), and how often each
    pair of kinds appears together: what the `popular` and `adversarial` samplers rank by."""
    frequency, together = Counter(), Counter()
    for scene in scenes:
        present = sorted(kinds_of(scene))
        frequency.update(present)
        together.update(combinations(present, 2))
    return frequency, together


def absent_kinds(
    present: set, sampler: str, k: int, rng: np.random.Generator, frequency: Counter, together: Counter
) -> list[tuple[str, str]]:
    """k object kinds the image does not hold, by `sampler` (ties broken at random)."""
    candidates = [kind for kind in KINDS if kind not in present]
    order = rng.permutation(len(candidates))
    candidates = [candidates[i] for i in order]
    if sampler == "random":
        return candidates[:k]
    if sampler == "popular":
        return sorted(candidates, key=lambda kind: -frequency[kind])[:k]
    if sampler == "adversarial":

        def co_occurrence(kind):
            return sum(together[tuple(sorted((kind, other)))] for other in present)

        return sorted(candidates, key=lambda kind: -co_occurrence(kind))[:k]
    raise ValueError(f"unknown POPE sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def pope_question(color: str, shape: str) -> str:
    return f"Is there {article(color)} {color} {shape}?"


def make_probes(
    scenes: Sequence[Scene], sampler: str, frequency: Counter, together: Counter, seed: int = 0
) -> list[dict]:
    """[{"image": index, "question", "truth": bool}]: up to 3 present kinds and as many absent ones per
    image (balanced, as POPE is)."""
    rng = np.random.default_rng([seed, SAMPLERS.index(sampler) if sampler in SAMPLERS else 99])
    probes = []
    for index, scene in enumerate(scenes):
        present = sorted(kinds_of(scene))
        chosen = [present[i] for i in rng.permutation(len(present))[:PROBES_PER_IMAGE]]
        for kind in chosen:
            probes.append({"image": index, "question": pope_question(*kind), "truth": True})
        for kind in absent_kinds(set(present), sampler, len(chosen), rng, frequency, together):
            probes.append({"image": index, "question": pope_question(*kind), "truth": False})
    return probes


def said_yes(answer: str) -> bool:
    """POPE's reading of a free answer: yes when it begins with "yes"; anything else is a no."""
    return normalize_vqa_answer(answer).startswith("yes")


def binary_scores(said: Sequence[bool], truth: Sequence[bool]) -> dict:
    """Accuracy, precision, recall, F1 (positive: present) and the yes-ratio, each {mean, ci_low,
    ci_high, n} with a bootstrap interval over probes. Precision of a model that never says yes is 0."""
    said, truth = np.asarray(said, dtype=bool), np.asarray(truth, dtype=bool)
    if said.shape != truth.shape or said.size == 0:
        raise ValueError("binary_scores needs as many answers as probes, at least one")

    def confusion(idx):
        s, t = said[idx], truth[idx]
        tp = float(np.sum(s & t))
        return tp, float(np.sum(s & ~t)), float(np.sum(~s & t))

    def precision(idx):
        tp, fp, _ = confusion(idx)
        return tp / (tp + fp) if tp + fp else 0.0

    def recall(idx):
        tp, _, fn = confusion(idx)
        return tp / (tp + fn) if tp + fn else 0.0

    def f1(idx):
        p, r = precision(idx), recall(idx)
        return 2 * p * r / (p + r) if p + r else 0.0

    indices = np.arange(said.size)
    return {
        "accuracy": summarize((said == truth).astype(float)),
        "precision": summarize(indices, statistic=precision),
        "recall": summarize(indices, statistic=recall),
        "f1": summarize(indices, statistic=f1),
        "yes_ratio": summarize(said.astype(float)),
    }


def evaluate_pope(
    answer: Callable[[Image.Image, str], str],
    scenes: Sequence[Scene],
    training: Sequence[Scene],
    samplers: Sequence[str] = SAMPLERS,
    seed: int = 0,
) -> dict:
    """POPE on `scenes` for each sampler: the model's scores, and the floors of "always yes" and
    "always no" on the same probes. `training`: the scenes the samplers' statistics come from."""
    frequency, together = training_statistics(training)
    images = [render(scene) for scene in scenes]
    answers: dict[tuple[int, str], bool] = {}  # the samplers share their present-object probes

    def ask(probe: dict) -> bool:
        key = (probe["image"], probe["question"])
        if key not in answers:
            answers[key] = said_yes(answer(images[probe["image"]], probe["question"]))
        return answers[key]

    result = {}
    for sampler in samplers:
        probes = make_probes(scenes, sampler, frequency, together, seed)
        truth = [p["truth"] for p in probes]
        said = [ask(p) for p in probes]
        result[sampler] = {
            **binary_scores(said, truth),
            "floor_always_yes": {k: v["mean"] for k, v in binary_scores([True] * len(truth), truth).items()},
            "floor_always_no": {k: v["mean"] for k, v in binary_scores([False] * len(truth), truth).items()},
        }
    return result


def mentioned_kinds(caption: str) -> set[tuple[str | None, str]]:
    """The distinct object kinds a caption names: (colour or None, shape)."""
    return {(p.color, p.shape) for p in parse_caption(caption)}


def hallucinated(caption: str, scene: Scene) -> tuple[int, int]:
    """(kinds named that the scene does not hold, kinds named). A colourless mention is right when
    any object has that shape."""
    present = kinds_of(scene)
    shapes = {shape for _, shape in present}
    named = mentioned_kinds(caption)
    wrong = sum(
        (shape not in shapes) if color is None else ((color, shape) not in present) for color, shape in named
    )
    return wrong, len(named)


def chair(captions: Sequence[str], scenes: Sequence[Scene]) -> dict:
    """CHAIR_i (hallucinated kinds over all kinds named, over the corpus) and CHAIR_s (captions with at
    least one), each with a bootstrap interval over captions; and how many kinds were named at all."""
    counts = np.array([hallucinated(c, s) for c, s in zip(captions, scenes, strict=True)], dtype=float)
    if counts.size == 0:
        raise ValueError("chair needs at least one caption")
    indices = np.arange(len(counts))

    def chair_i(idx):
        named = counts[idx, 1].sum()
        return float(counts[idx, 0].sum() / named) if named else 0.0

    return {
        "chair_i": summarize(indices, statistic=chair_i),
        "chair_s": summarize((counts[:, 0] > 0).astype(float)),
        "kinds_named_per_caption": float(counts[:, 1].mean()),
    }


def evaluate_chair(captions: Sequence[str], scenes: Sequence[Scene]) -> dict:
    """CHAIR of a model's captions of `scenes`, beside the floor of a caption that names every kind
    the world has (what a model that lists everything would score; a silent one scores 0 by naming
    nothing, which `kinds_named_per_caption` shows)."""
    everything = ", ".join(f"{article(c)} {c} {s}" for c, s in KINDS)
    floor = chair([everything] * len(scenes), scenes)
    return {
        **chair(captions, scenes),
        "floor_names_everything": {k: (v["mean"] if isinstance(v, dict) else v) for k, v in floor.items()},
    }
