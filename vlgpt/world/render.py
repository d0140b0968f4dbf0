"""Rendering Shapes-world scenes to anti-aliased RGB images.

Shapes are drawn as polygons on a canvas `SUPERSAMPLE` times larger and box-filtered down: cheap,
exact anti-aliasing that keeps throughput in the thousands of scenes per second on one core.
The same `shape_polygon` serves the judge's template matching, so drawing and judging agree.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .scene import BACKGROUND_RGB, COLORS, Scene

SUPERSAMPLE = 4
TEXTURE_AMPLITUDE = 7.0  # +- levels of the light background texture; far below any object colour


@cache
def unit_polygon(shape: str) -> tuple[tuple[float, float], ...]:
    """Vertices of `shape` inside the unit circle, y pointing down (image coordinates)."""
    if shape == "circle":
        n = 48
        return tuple((math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i in range(n))
    if shape == "square":
        h = 0.78  # half side: a square of similar visual weight to the circle
        return ((-h, -h), (h, -h), (h, h), (-h, h))
    if shape == "triangle":
        # Equilateral, apex up, inscribed in the unit circle.
        return tuple(
            (math.cos(a), -math.sin(a))
            for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
        )
    if shape == "diamond":
        return ((0.0, -1.0), (0.8, 0.0), (0.0, 1.0), (-0.8, 0.0))
    if shape == "star":
        inner = 0.45
        points = []
        for i in range(10):
            radius = 1.0 if i % 2 == 0 else inner
            angle = math.pi / 2 + i * math.pi / 5
            points.append((radius * math.cos(angle), -radius * math.sin(angle)))
        return tuple(points)
    if shape == "cross":
        a, t = 0.85, 0.3  # arm half-length and half-thickness
        return (
            (-t, -a),
            (t, -a),
            (t, -t),
            (a, -t),
            (a, t),
            (t, t),
            (t, a),
            (-t, a),
            (-t, t),
            (-a, t),
            (-a, -t),
            (-t, -t),
        )
    raise ValueError(f"unknown shape {shape!r}")


def shape_polygon(
    shape: str, x: float, y: float, radius: float, scale: float = 1.0
) -> list[tuple[float, float]]:
    """`shape` centred at (x, y) with the given radius, in a canvas scaled by `scale`."""
    return [((x + u * radius) * scale, (y + v * radius) * scale) for u, v in unit_polygon(shape)]


@lru_cache(maxsize=256)
def _background(width: int, height: int, background: str, variant: int, supersample: int) -> Image.Image:
    """The supersampled background canvas; textures come in 16 reproducible variants per size."""
    base = np.empty((height * supersample, width * supersample, 3), dtype=np.float32)
    base[:] = BACKGROUND_RGB
    if background == "textured":
        rng = np.random.default_rng(variant)
        coarse = rng.uniform(-1, 1, size=(height // 8 + 2, width // 8 + 2)).astype(np.float32)
        smooth = Image.fromarray(coarse, mode="F").resize(base.shape[1::-1], Image.BILINEAR)
        base += np.asarray(smooth, dtype=np.float32)[..., None] * TEXTURE_AMPLITUDE
    return Image.fromarray(np.clip(base + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def render(scene: Scene, supersample: int = SUPERSAMPLE) -> Image.Image:
    """The scene as an RGB image of scene.width x scene.height pixels."""
    s = supersample
    # Draw straight onto a copy of the big background, then average s x s blocks (Image.reduce):
    # no alpha compositing and no mode conversions, which dominate the cost at 64 x 64.
    canvas = _background(scene.width, scene.height, scene.background, scene.texture_seed % 16, s).copy()
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        r = scene.radius(obj)
        draw.polygon(shape_polygon(obj.shape, obj.x, obj.y, r, s), fill=COLORS[obj.color])
    return canvas.reduce(s) if s > 1 else canvas


def render_grid(
    images: list[Image.Image],
    columns: int = 8,
    pad: int = 2,
    scale: int = 1,
    fill: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Tile images into one picture: sample grids and reconstruction grids. Each is shown at the
    first one's size (a decoder may draw at another size than its sources)."""
    if not images:
        raise ValueError("render_grid needs at least one image")
    w, h = images[0].size
    w, h = w * scale, h * scale
    rows = math.ceil(len(images) / columns)
    cols = min(columns, len(images))
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), fill)
    for i, image in enumerate(images):
        if image.size != (w, h):
            image = image.resize((w, h), Image.NEAREST if image.size[0] <= w else Image.BILINEAR)
        grid.paste(image.convert("RGB"), (pad + (i % columns) * (w + pad), pad + (i // columns) * (h + pad)))
    return grid
