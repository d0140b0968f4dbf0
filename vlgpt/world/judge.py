"""The judge: image -> scene by classical image processing, no learned model.

It plays the part of GenEval's object detector for the Shapes world, so text-to-image, editing
and reconstructions can be scored exactly. Steps:

1. estimate the background colour from the border and measure each pixel's distance to it;
2. foreground = distance above a threshold (after a 3x3 mean when the image is noisy);
3. connected components of the foreground are objects (placement keeps a gap between objects);
4. colour = the palette entry nearest the mean of the component's core (eroded) pixels;
5. shape = the template (rendered by the same polygons as the renderer, fitted to the component's
   bounding box) with the highest IoU; size = the nominal radius nearest the fitted one.

A meter must give noise nothing, so the judge refuses what is not a drawing instead of turning it
into the nearest shape: an image whose background is not plain (its smoothed border varies more
than a textured Shapes background does) is unreadable as a whole, and a component that no template
fits (soft IoU below `MIN_SHAPE_IOU`), whose colour lies far from every palette colour's blend
with the background (`MAX_COLOR_RESIDUAL`) or is no single colour at all (`MAX_CORE_SPREAD`) is an
unreadable blob, not an object. What was refused is
listed in the result's `unreadable` (a `JudgedScene`): scores count it against the image.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .render import unit_polygon
from .scene import COLORS, SHAPES, SIZE_FRACTION, Scene, ShapeObject, relation, relation_holds

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float32)  # [C, 3]
# Foreground threshold: well above texture and smoothed noise, well below every object colour.
FOREGROUND_DISTANCE = 55.0
NOISY_BACKGROUND_STD = 6.0
MIN_AREA_FRACTION = 0.003  # components smaller than this share of the canvas are specks
# Refusals (measured on 300 test scenes: clean, blurred (sigma 1), 32 -> 64 resampled and noisy
# (sd 0.05) renders fit their template at soft IoU >= 0.84 and keep their smoothed border within
# 11 levels of its median; components of random noise fit at 0.5 on median).
MIN_SHAPE_IOU = 0.75
MAX_COLOR_RESIDUAL = 45.0  # RGB distance from the nearest palette colour's blend line
MAX_CORE_SPREAD = 60.0  # median RGB distance of a blob's core pixels from their mean (renders: <= 40)
MAX_BACKGROUND_SPREAD = 15.0  # median distance of the smoothed border from its median colour


class JudgeError(ValueError):
    """The judge was handed something that is not an image it can read."""


@dataclass(frozen=True)
class JudgedScene(Scene):
    """The scene the judge read, with what it refused: the whole image ("background is not plain")
    or single blobs ("blob at 30,12: no shape fits (IoU 0.52)"). Unreadable blobs count as wrong
    objects wherever a score asks for exactly the objects asked for."""

    unreadable: tuple[str, ...] = ()

    @property
    def readable(self) -> bool:
        return not self.unreadable


def _area_and_centroid(shape: str) -> tuple[float, float, float]:
    """Area and centroid of the unit polygon (shoelace formula)."""
    pts = np.array(unit_polygon(shape))
    x, y = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    return (
        abs(area),
        float(((x + x1) * cross).sum() / (6 * area)),
        float(((y + y1) * cross).sum() / (6 * area)),
    )


_UNIT = {s: _area_and_centroid(s) for s in SHAPES}


def _as_array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        array = image.astype(np.float32)
        if array.ndim != 3 or array.shape[2] != 3:
            raise JudgeError(f"expected an H x W x 3 array, got shape {array.shape}")
        return array * 255.0 if array.max() <= 1.0 else array
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    raise JudgeError(f"the judge takes a PIL image or an H x W x 3 array, not {type(image).__name__}")


def _template_mask(
    shape: str, cx: float, cy: float, radius: float, box: tuple[int, int, int, int], supersample: int = 4
) -> np.ndarray:
    """Coverage (0..1) of `shape` over the pixel window `box` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    s = supersample
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    poly = [((cx - x0 + u * radius) * s, (cy - y0 + v * radius) * s) for u, v in unit_polygon(shape)]
    ImageDraw.Draw(canvas).polygon(poly, fill=255)
    return np.asarray(canvas.reduce(s), dtype=np.float32) / 255.0


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two coverage maps: robust to anti-aliased edges on both sides."""
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-6))


def _fit_shape(soft: np.ndarray) -> tuple[str, float, float, float, float]:
    """Best (shape, radius, cx, cy, soft IoU) for one object's soft coverage map (zero outside it).

    Each candidate is fitted by moments, which are exact at sub-pixel level on anti-aliased
    renders and nearly unchanged by blur: area -> radius, coverage-weighted centroid -> centre.
    """
    ys, xs = np.nonzero(soft)
    pad = 2
    x0, y0 = max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0)
    x1, y1 = min(int(xs.max()) + 1 + pad, soft.shape[1]), min(int(ys.max()) + 1 + pad, soft.shape[0])
    target = soft[y0:y1, x0:x1]
    mass = float(target.sum())
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1]
    # Pixel i covers [i, i + 1) in the renderer's coordinates: its centre is i + 0.5.
    mean_x = float(((grid_x + 0.5) * target).sum() / mass)
    mean_y = float(((grid_y + 0.5) * target).sum() / mass)
    best, best_score = ("circle", 1.0, mean_x, mean_y), 0.0
    for shape in SHAPES:
        unit_area, unit_cx, unit_cy = _UNIT[shape]
        radius = math.sqrt(mass / unit_area)
        cx, cy = mean_x - unit_cx * radius, mean_y - unit_cy * radius
        sharp = _template_mask(shape, cx, cy, radius, (x0, y0, x1, y1))
        # The image may be blurred (smoothed for noise, a generated image): try a softened template too.
        score = max(_soft_iou(sharp, target), _soft_iou(ndimage.uniform_filter(sharp, size=3), target))
        if score > best_score:
            best_score, best = score, (shape, radius, cx, cy)
    return (*best, best_score)


def _nearest_color(
    pixels: np.ndarray, distance: np.ndarray, background: np.ndarray
) -> tuple[str, float, float]:
    """Palette colour whose blend line with the background passes closest to the object's core, how
    far from that line the core's mean lies, and how much the core's pixels spread around their
    mean (a drawn object's core is one flat colour; noise is not), both in RGB levels.

    A blurred or partly covered pixel is alpha * colour + (1 - alpha) * background, so comparing
    against the whole blend line, not the pure colour, keeps a blurred brown from reading as gray.
    """
    core_pixels = pixels[distance >= np.quantile(distance, 0.5)]
    core = core_pixels.mean(axis=0)
    spread = float(np.median(np.linalg.norm(core_pixels - core, axis=1)))
    direction = _PALETTE - background  # [C, 3]
    alpha = np.clip(((core - background) * direction).sum(1) / (direction**2).sum(1), 0.35, 1.0)
    residual = np.linalg.norm(background + alpha[:, None] * direction - core, axis=1)
    best = int(np.argmin(residual))
    return _PALETTE_NAMES[best], float(residual[best]), spread


def judge(image) -> JudgedScene:
    """The scene in `image` (PIL image or H x W x 3 array), objects sorted left to right, with what
    could not be read in its `unreadable`."""
    rgb = _as_array(image)
    height, width = rgb.shape[:2]
    if min(height, width) < 8:
        raise JudgeError(f"image of {width}x{height} px is too small to judge")
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    smooth = ndimage.uniform_filter(rgb, size=(3, 3, 1))
    smooth_border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    spread = float(np.median(np.linalg.norm(smooth_border - np.median(smooth_border, axis=0), axis=1)))
    if spread > MAX_BACKGROUND_SPREAD:
        return JudgedScene(width, height, unreadable=(f"background is not plain (spread {spread:.0f})",))
    distance = np.linalg.norm(rgb - background, axis=2)
    noisy = np.median(np.abs(np.linalg.norm(border - background, axis=1))) > NOISY_BACKGROUND_STD
    if noisy:
        distance = np.linalg.norm(smooth - background, axis=2)
    foreground = distance > FOREGROUND_DISTANCE
    labels, count = ndimage.label(foreground)
    min_area = MIN_AREA_FRACTION * width * height
    side = min(width, height)
    objects, unreadable = [], []
    for index in range(1, count + 1):
        component = labels == index
        area = int(component.sum())
        if area < min_area:
            continue
        color, residual, spread = _nearest_color(rgb[component], distance[component], background)
        full = float(np.linalg.norm(np.asarray(COLORS[color], dtype=np.float32) - background))
        # Soft coverage for the IoU: 0 at the background colour, 1 at the full object colour.
        coverage = np.clip(distance / max(full, 1e-6), 0.0, 1.0)
        soft = coverage * ndimage.binary_dilation(component)
        shape, radius, cx, cy, iou = _fit_shape(soft)
        where = f"blob at {cx:.0f},{cy:.0f}"
        if residual > MAX_COLOR_RESIDUAL or spread > MAX_CORE_SPREAD:
            unreadable.append(f"{where}: no palette colour (off by {residual:.0f}, spread {spread:.0f})")
            continue
        if iou < MIN_SHAPE_IOU:
            unreadable.append(f"{where}: no shape fits (IoU {iou:.2f})")
            continue
        sizes = {name: frac * side for name, frac in SIZE_FRACTION.items()}
        size = min(sizes, key=lambda name: abs(math.log(radius / sizes[name])))
        objects.append(ShapeObject(shape, color, size, round(float(cx), 2), round(float(cy), 2)))
    objects.sort(key=lambda o: (o.x, o.y))
    return JudgedScene(width, height, tuple(objects), unreadable=tuple(unreadable))


# --- comparing scenes --------------------------------------------------------------------------


def match_objects(predicted: Scene, truth: Scene) -> list[tuple[int, int]]:
    """Pairs (i_pred, i_true) matched by nearest centres, greedily, closest first."""
    pairs = sorted(
        (math.hypot(p.x - t.x, p.y - t.y), i, j)
        for i, p in enumerate(predicted.objects)
        for j, t in enumerate(truth.objects)
    )
    used_p, used_t, matched = set(), set(), []
    for _, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matched.append((i, j))
    return matched


def compare_scenes(predicted: Scene, truth: Scene, position_tolerance: float = 0.15) -> dict[str, bool]:
    """Which aspects of `truth` the `predicted` scene gets right.

    count/colors/shapes/sizes compare multisets (no positions needed; what the judge could not read
    counts as an extra object); kinds compares (color, shape) bindings; positions requires each
    matched centre within `position_tolerance` x canvas side; relations requires every pair's
    relation to agree; `exact` is all of them.
    """

    def multiset(scene: Scene, key) -> Counter:
        return Counter(key(o) for o in scene.objects)

    refused = len(getattr(predicted, "unreadable", ()))  # a blob the judge could not read is a wrong object
    result = {
        "count": len(predicted.objects) + refused == len(truth.objects),
        "colors": multiset(predicted, lambda o: o.color) == multiset(truth, lambda o: o.color),
        "shapes": multiset(predicted, lambda o: o.shape) == multiset(truth, lambda o: o.shape),
        "sizes": multiset(predicted, lambda o: o.size) == multiset(truth, lambda o: o.size),
        "kinds": multiset(predicted, lambda o: o.kind) == multiset(truth, lambda o: o.kind),
    }
    matched = match_objects(predicted, truth) if result["count"] else []
    tolerance = position_tolerance * min(truth.width, truth.height)
    result["positions"] = result["count"] and all(
        math.hypot(predicted.objects[i].x - truth.objects[j].x, predicted.objects[i].y - truth.objects[j].y)
        <= tolerance
        for i, j in matched
    )
    result["relations"] = result["count"] and all(
        relation_holds(
            relation(truth.objects[j1], truth.objects[j2]), predicted.objects[i1], predicted.objects[i2]
        )
        for (i1, j1) in matched
        for (i2, j2) in matched
        if j1 < j2
    )
    result["exact"] = all(result.values()) and all(
        predicted.objects[i].kind == truth.objects[j].kind
        and predicted.objects[i].size == truth.objects[j].size
        for i, j in matched
    )
    return result
