"""The Shapes world: procedural scenes, their language, and an exact judge."""

from .dataset import ShapesWorld
from .judge import JudgedScene, JudgeError, compare_scenes, judge
from .render import render, render_grid
from .scene import COLORS, SHAPES, SIZES, Scene, SceneError, ShapeObject, compose
from .splits import HELD_OUT_PAIRS, SPLITS

__all__ = [
    "COLORS",
    "HELD_OUT_PAIRS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "JudgeError",
    "JudgedScene",
    "Scene",
    "SceneError",
    "ShapeObject",
    "ShapesWorld",
    "compare_scenes",
    "compose",
    "judge",
    "render",
    "render_grid",
]
