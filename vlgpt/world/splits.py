"""Dataset splits of the Shapes world: disjoint seed ranges, plus a compositional split.

Seeds are disjoint by construction (each split owns a block of 10^8 seeds), so a test scene can
never leak into training. The compositional split holds out a fixed set of color-shape pairs: they
never appear in train/val/test images *or* text, and every comp-test scene contains at least one.
"""

from __future__ import annotations

from .scene import SceneError, SceneSampler

SPLITS: tuple[str, ...] = ("train", "val", "test", "comp-test")
SEED_BLOCK = 100_000_000
SPLIT_OFFSET: dict[str, int] = {name: i * SEED_BLOCK for i, name in enumerate(SPLITS)}

# One pair per shape, each colour at most once, so every shape and colour is still seen in training.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("blue", "triangle"),
        ("green", "cross"),
        ("yellow", "diamond"),
        ("purple", "circle"),
        ("orange", "square"),
    }
)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise SceneError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def split_seed(split: str, index: int) -> int:
    """The scene seed of row `index` of `split`: disjoint across splits."""
    check_split(split)
    if not 0 <= index < SEED_BLOCK:
        raise SceneError(f"row index {index} is outside 0..{SEED_BLOCK - 1}")
    return SPLIT_OFFSET[split] + index


def sampler_for(split: str, width: int = 64, height: int = 64, max_objects: int = 4) -> SceneSampler:
    check_split(split)
    if split == "comp-test":
        return SceneSampler(width, height, max_objects, required=HELD_OUT_PAIRS)
    return SceneSampler(width, height, max_objects, excluded=HELD_OUT_PAIRS)


def mentions_held_out(text: str) -> bool:
    """True when `text` names a held-out pair (e.g. "red star"), which train text must never do."""
    lowered = text.lower()
    return any(f"{color} {shape}" in lowered for color, shape in HELD_OUT_PAIRS)
