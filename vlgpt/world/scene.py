"""Scenes of the Shapes world: what is in a picture, independent of how it is drawn.

A scene is 1-4 objects (shape, color, size, centre) on a W x H canvas with a plain or lightly
textured background. Scenes are deterministic given a seed and round-trip through JSON, so a
dataset row can always be re-rendered and re-judged exactly.

Geometry is the single source of truth for relations: `relation(a, b)` compares centres along the
dominant axis, so a caption's "left of" is never a matter of taste.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")

# Saturated colours at least 70 apart in RGB and far from the light background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 15),
    "yellow": (230, 205, 20),
    "green": (35, 160, 55),
    "cyan": (20, 185, 205),
    "blue": (35, 65, 215),
    "purple": (125, 40, 175),
    "pink": (240, 100, 200),
    "brown": (120, 70, 30),
    "gray": (110, 110, 110),
}

SIZES: tuple[str, ...] = ("small", "large")
# Object "radius" (half the extent of the shape's bounding circle) as a fraction of min(W, H).
SIZE_FRACTION: dict[str, float] = {"small": 0.095, "large": 0.155}
BACKGROUNDS: tuple[str, ...] = ("plain", "textured")
BACKGROUND_RGB: tuple[int, int, int] = (236, 234, 228)

MIN_CANVAS, MAX_CANVAS = 32, 256
MAX_OBJECTS = 4
# Free pixels between two objects' bounding circles, as a fraction of min(W, H); keeps objects
# separable by the judge even after a 1 px blur.
GAP_FRACTION = 0.06

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


class SceneError(ValueError):
    """A scene that cannot exist: unknown names, too small a canvas, objects that do not fit."""


@dataclass(frozen=True)
class ShapeObject:
    """One object: what it is and where its centre lies, in pixels."""

    shape: str
    color: str
    size: str
    x: float
    y: float

    def __post_init__(self) -> None:
        check_names(shape=self.shape, color=self.color, size=self.size)

    def radius(self, width: int, height: int) -> float:
        return SIZE_FRACTION[self.size] * min(width, height)

    @property
    def kind(self) -> tuple[str, str]:
        """(color, shape): the pair the compositional split holds out."""
        return (self.color, self.shape)


@dataclass(frozen=True)
class Scene:
    """A canvas and its objects. `texture_seed` makes a textured background reproducible."""

    width: int = 64
    height: int = 64
    objects: tuple[ShapeObject, ...] = ()
    background: str = "plain"
    texture_seed: int = 0

    def __post_init__(self) -> None:
        check_canvas(self.width, self.height)
        if self.background not in BACKGROUNDS:
            raise SceneError(
                f"unknown background {self.background!r}; choose one of {', '.join(BACKGROUNDS)}"
            )

    # --- JSON round trip -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, check_layout: bool = True) -> Scene:
        """A scene from its dict; with `check_layout`, objects must lie on the canvas, apart."""
        try:
            objects = tuple(ShapeObject(**o) for o in data.get("objects", ()))
            scene = cls(**{**data, "objects": objects})
        except TypeError as error:
            raise SceneError(f"not a scene description: {error}") from None
        if check_layout:
            scene.check_layout()
        return scene

    def check_layout(self) -> None:
        """SceneError unless every object lies inside the canvas and keeps its distance."""
        for i, obj in enumerate(self.objects):
            if not self.fits(obj, ignore=i):
                raise SceneError(
                    f"object {i} ({obj.size} {obj.color} {obj.shape} at {obj.x:.1f},{obj.y:.1f}) leaves the "
                    f"{self.width}x{self.height} canvas or overlaps another object; move it or make it "
                    "smaller"
                )

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> Scene:
        return dataclasses.replace(self, **changes)

    def radius(self, obj: ShapeObject) -> float:
        return obj.radius(self.width, self.height)

    def as_square(self, size: int) -> Scene:
        """The scene as its picture looks centre-cropped to a square and resized to size x size (what
        a dataset does to every image for a model of that `image_size`): centres moved with the pixels."""
        if (self.width, self.height) == (size, size):
            return self
        side = min(self.width, self.height)
        left, top, scale = (self.width - side) // 2, (self.height - side) // 2, size / side
        objects = tuple(
            dataclasses.replace(o, x=(o.x - left) * scale, y=(o.y - top) * scale) for o in self.objects
        )
        return dataclasses.replace(self, width=size, height=size, objects=objects)

    def fits(self, obj: ShapeObject, ignore: int | None = None) -> bool:
        """True when `obj` lies inside the canvas and keeps the gap to every other object."""
        r = self.radius(obj)
        if not (r <= obj.x <= self.width - r and r <= obj.y <= self.height - r):
            return False
        gap = GAP_FRACTION * min(self.width, self.height)
        for i, other in enumerate(self.objects):
            if i == ignore:
                continue
            if math.hypot(obj.x - other.x, obj.y - other.y) < r + self.radius(other) + gap:
                return False
        return True


def check_names(*, shape: str | None = None, color: str | None = None, size: str | None = None) -> None:
    for value, allowed, what in ((shape, SHAPES, "shape"), (color, COLORS, "color"), (size, SIZES, "size")):
        if value is not None and value not in allowed:
            raise SceneError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


def check_canvas(width: int, height: int) -> None:
    for side, name in ((width, "width"), (height, "height")):
        if not isinstance(side, (int, np.integer)) or not MIN_CANVAS <= side <= MAX_CANVAS:
            raise SceneError(f"canvas {name} {side!r} is outside {MIN_CANVAS}..{MAX_CANVAS} px")


def relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where `a` is relative to `b`, along the axis on which they are further apart."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def relation_holds(name: str, a: ShapeObject, b: ShapeObject, margin: float = 0.0) -> bool:
    """True when `a` is `name` (e.g. "left of") `b`, by centres, with an optional margin in px.

    Looser than `relation`: only the named axis counts, as GenEval's position check does.
    """
    if name == "left of":
        return a.x < b.x - margin
    if name == "right of":
        return a.x > b.x + margin
    if name == "above":
        return a.y < b.y - margin
    if name == "below":
        return a.y > b.y + margin
    raise SceneError(f"unknown relation {name!r}; choose one of {', '.join(RELATIONS)}")


def place(
    rng: np.random.Generator,
    scene: Scene,
    shape: str,
    color: str,
    size: str,
    *,
    tries: int = 200,
) -> ShapeObject:
    """A new object at a random free spot of `scene`; SceneError when none is found."""
    r = SIZE_FRACTION[size] * min(scene.width, scene.height)
    for _ in range(tries):
        x = float(rng.uniform(r, scene.width - r))
        y = float(rng.uniform(r, scene.height - r))
        obj = ShapeObject(shape, color, size, round(x, 2), round(y, 2))
        if scene.fits(obj):
            return obj
    raise SceneError(
        f"no room for a {size} {color} {shape} on a {scene.width}x{scene.height} canvas "
        f"holding {len(scene.objects)} object(s); use fewer or smaller objects or a larger canvas"
    )


def compose(
    kinds: list[tuple[str, str, str]],
    *,
    width: int = 64,
    height: int = 64,
    background: str = "plain",
    seed: int = 0,
) -> Scene:
    """A scene holding exactly the given (shape, color, size) objects at random free positions."""
    for shape, color, size in kinds:
        check_names(shape=shape, color=color, size=size)
    scene = Scene(width, height, (), background, seed)
    if len(kinds) > MAX_OBJECTS:
        raise SceneError(f"{len(kinds)} objects exceed the maximum of {MAX_OBJECTS}")
    rng = np.random.default_rng(seed)
    # Whole-scene retries: an unlucky early placement can leave no room for a later object.
    for _ in range(20):
        scene = Scene(width, height, (), background, seed)
        try:
            for shape, color, size in kinds:
                scene = scene.replace(objects=scene.objects + (place(rng, scene, shape, color, size),))
            return scene
        except SceneError:
            continue
    raise SceneError(
        f"{len(kinds)} objects ({', '.join(f'{s} {c} {k}' for k, c, s in kinds)}) do not fit on a "
        f"{width}x{height} canvas; use fewer or smaller objects or a larger canvas"
    )


@dataclass(frozen=True)
class SceneSampler:
    """Draws random scenes; `excluded` (color, shape) pairs never appear, `required` forces one."""

    width: int = 64
    height: int = 64
    max_objects: int = MAX_OBJECTS
    excluded: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    required: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    textured_fraction: float = 0.3
    group_fraction: float = 0.25  # scenes with 2-3 identical objects, so counting is learnable

    def __post_init__(self) -> None:
        check_canvas(self.width, self.height)
        if not 1 <= self.max_objects <= MAX_OBJECTS:
            raise SceneError(f"max_objects must be 1..{MAX_OBJECTS}, got {self.max_objects}")

    def allowed_kinds(self) -> list[tuple[str, str]]:
        return [(c, s) for c in COLORS for s in SHAPES if (c, s) not in self.excluded]

    def sample(self, seed: int) -> Scene:
        rng = np.random.default_rng(seed)
        kinds = self.allowed_kinds()
        n = int(rng.integers(1, self.max_objects + 1))
        picks: list[tuple[str, str, str]] = []
        if n >= 2 and rng.random() < self.group_fraction:
            color, shape = kinds[rng.integers(len(kinds))]
            size = SIZES[rng.integers(2)]
            picks += [(shape, color, size)] * int(rng.integers(2, n + 1))
        if self.required:
            required = sorted(self.required)
            color, shape = required[rng.integers(len(required))]
            picks = [(shape, color, SIZES[rng.integers(2)])] + picks[: n - 1]
        while len(picks) < n:
            color, shape = kinds[rng.integers(len(kinds))]
            picks.append((shape, color, SIZES[rng.integers(2)]))
        order = rng.permutation(len(picks))
        picks = [picks[i] for i in order]
        background = "textured" if rng.random() < self.textured_fraction else "plain"
        # Large objects may not all fit on a small canvas: drop sizes to small before giving up.
        try:
            return compose(picks, width=self.width, height=self.height, background=background, seed=seed)
        except SceneError:
            picks = [(s, c, "small") for s, c, _ in picks]
            return compose(picks, width=self.width, height=self.height, background=background, seed=seed)
