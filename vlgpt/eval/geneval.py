"""Text-to-image scoring in GenEval's six categories, with the Shapes-world judge as detector.

GenEval (Ghosh et al., 2023) asks for an object, two objects, a count, a colour, a relative
position or two colour bindings, then checks a detector's reading of the generated image. Here the
judge reads the image exactly, so each prompt's check is exact too. Overall = mean over categories,
as GenEval reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..world.language import NUMBER_WORDS, RELATION_PHRASES, article, plural
from ..world.scene import COLORS, RELATIONS, SHAPES, SIZES, Scene, SceneError, compose, relation_holds
from ..world.splits import HELD_OUT_PAIRS
from .text_metrics import summarize, summarize_groups

CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
POSITION_MARGIN = 0.05  # fraction of the canvas side by which a relation must hold


@dataclass(frozen=True)
class Requirement:
    """What an image must show: `count` objects of `shape` (with `color` when given)."""

    shape: str
    color: str | None = None
    count: int | None = None  # None: at least one


@dataclass(frozen=True)
class T2IPrompt:
    category: str
    prompt: str
    requires: tuple[Requirement, ...]
    relation: str | None = None  # requires[0] <relation> requires[1]
    scene: dict = field(default_factory=dict)  # a scene that satisfies the prompt (the oracle's answer)

    @property
    def description(self) -> str:
        """The prompt without "An image of " and the final period: "a red circle"."""
        return self.prompt.removeprefix("An image of ").rstrip(".")


def _matching(scene: Scene, req: Requirement):
    return [o for o in scene.objects if o.shape == req.shape and (req.color is None or o.color == req.color)]


def score_prompt(prompt: T2IPrompt, judged: Scene, strict: bool = False) -> float:
    """1.0 when the judged scene satisfies the prompt, else 0.0.

    GenEval's rule (the default) asks for the named objects and ignores anything else in the
    picture. `strict` also asks for nothing else: exactly one of each object the prompt names
    without a number, no other object and no blob the judge could not read."""
    found = []
    for req in prompt.requires:
        objs = _matching(judged, req)
        wanted = req.count if req.count is not None else (1 if strict else None)
        if (wanted is None and not objs) or (wanted is not None and len(objs) != wanted):
            return 0.0
        found.append(objs)
    if strict:
        asked = sum(len(objs) for objs in found)
        if asked != len(judged.objects) or getattr(judged, "unreadable", ()):
            return 0.0
    if prompt.relation is not None:
        margin = POSITION_MARGIN * min(judged.width, judged.height)
        ok = any(
            relation_holds(prompt.relation, a, b, margin) for a in found[0] for b in found[1] if a is not b
        )
        return float(ok)
    return 1.0


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def make_prompts(
    n_per_category: int = 50, seed: int = 0, *, width: int = 64, height: int = 64, compositional: bool = False
) -> list[T2IPrompt]:
    """Prompts of every category. `compositional`: colour prompts use only held-out pairs.

    Non-compositional prompts never name a held-out pair, so training never sees them either.
    """
    rng = np.random.default_rng([seed, 7])
    allowed = [(c, s) for c in COLORS for s in SHAPES if ((c, s) in HELD_OUT_PAIRS) == compositional]
    any_pairs = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    prompts = []
    for category in CATEGORIES:
        made = 0
        while made < n_per_category:
            try:
                prompts.append(_make(category, rng, allowed, any_pairs, width, height))
                made += 1
            except SceneError:
                continue
    return prompts


def _make(category, rng, allowed, any_pairs, width, height) -> T2IPrompt:
    seed = int(rng.integers(2**31))
    size = lambda: _pick(rng, SIZES)
    if category == "single_object":
        color, shape = _pick(rng, allowed)
        scene = compose([(shape, color, size())], width=width, height=height, seed=seed)
        return T2IPrompt(
            category, f"An image of {article(shape)} {shape}.", (Requirement(shape),), None, scene.to_dict()
        )
    if category == "colors":
        color, shape = _pick(rng, allowed)
        scene = compose([(shape, color, size())], width=width, height=height, seed=seed)
        return T2IPrompt(
            category,
            f"An image of {article(color)} {color} {shape}.",
            (Requirement(shape, color),),
            None,
            scene.to_dict(),
        )
    if category == "counting":
        color, shape = _pick(rng, allowed)
        n = int(rng.integers(2, 5))
        scene = compose([(shape, color, "small")] * n, width=width, height=height, seed=seed)
        return T2IPrompt(
            category,
            f"An image of {NUMBER_WORDS[n]} {plural(shape)}.",
            (Requirement(shape, None, n),),
            None,
            scene.to_dict(),
        )
    (c1, s1) = _pick(rng, allowed)
    (c2, s2) = _pick(rng, [p for p in any_pairs if p[1] != s1])
    if category == "two_object":
        scene = compose([(s1, c1, size()), (s2, c2, size())], width=width, height=height, seed=seed)
        return T2IPrompt(
            category,
            f"An image of {article(s1)} {s1} and {article(s2)} {s2}.",
            (Requirement(s1), Requirement(s2)),
            None,
            scene.to_dict(),
        )
    if category == "color_attr":
        scene = compose([(s1, c1, size()), (s2, c2, size())], width=width, height=height, seed=seed)
        return T2IPrompt(
            category,
            f"An image of {article(c1)} {c1} {s1} and {article(c2)} {c2} {s2}.",
            (Requirement(s1, c1), Requirement(s2, c2)),
            None,
            scene.to_dict(),
        )
    # position: retry placements until the relation clearly holds, so the oracle scene is valid.
    rel = _pick(rng, RELATIONS)
    for attempt in range(50):
        scene = compose([(s1, c1, size()), (s2, c2, size())], width=width, height=height, seed=seed + attempt)
        a, b = scene.objects
        if relation_holds(rel, a, b, POSITION_MARGIN * 2 * min(width, height)):
            return T2IPrompt(
                category,
                f"An image of {article(s1)} {s1} {RELATION_PHRASES[rel]} {article(s2)} {s2}.",
                (Requirement(s1), Requirement(s2)),
                rel,
                scene.to_dict(),
            )
    raise SceneError("no placement satisfies the relation")


def evaluate_t2i(
    generate: Callable[[T2IPrompt], Image.Image],
    judge: Callable[[Image.Image], Scene],
    prompts: list[T2IPrompt],
    progress: Callable | None = None,
) -> dict:
    """Per-category and overall scores, each with n and a bootstrap 95% CI; `strict_overall` beside
    `overall` asks for nothing but the objects named (`score_prompt(..., strict=True)`)."""
    scores: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    strict: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    items = progress(prompts) if progress else prompts
    for prompt in items:
        judged = judge(generate(prompt))
        scores[prompt.category].append(score_prompt(prompt, judged))
        strict[prompt.category].append(score_prompt(prompt, judged, strict=True))
    result = {c: summarize(v) for c, v in scores.items() if v}
    result["overall"] = summarize_groups([scores[c] for c in result])
    result["strict_overall"] = summarize_groups([strict[c] for c in CATEGORIES if strict[c]])
    return result


def noise_floor(
    judge: Callable[[Image.Image], Scene], prompts: list[T2IPrompt], spreads=(0.25, 0.5, 1.0), seed: int = 0
) -> dict:
    """What random pixel noise scores on the meter: the worst GenEval overall over noise of each
    spread (mean 0.5, clipped to 0..1). A text-to-image figure means something only well above it."""
    worst = None
    for spread in spreads:
        rng = np.random.default_rng(seed)
        side = prompts[0].scene.get("width", 64) if prompts else 64

        def noise(_prompt, rng=rng, spread=spread, side=side):
            values = rng.normal(0.5, spread, (side, side, 3))
            return Image.fromarray((np.clip(values, 0, 1) * 255).astype(np.uint8))

        overall = evaluate_t2i(noise, judge, prompts)["overall"]
        if worst is None or overall["mean"] > worst["mean"]:
            worst = {**overall, "spread": spread}
    return worst
