"""Per-object linear probes: can an object's shape, colour, size and place be read from the
feature vector at its place?

For a Shapes scene, each object is represented by one row of a feature map: the cell of the image
tower's grid under its centre, or the image token whose home tile holds its centre (the
tokenizer's N tokens tile the canvas in raster order). A linear classifier is fitted on 70% of the
objects and scored on the rest. Place asks in which half of its tile the object's centre lies, left
or right and top or bottom (the mean of the two): a feature must say where inside its tile the
object sits, which a decoder needs to redraw it there.

Chance: shape 1/6, colour 1/10, size 1/2, place 1/2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..data.images import pixels_from
from ..world.render import render
from ..world.scene import COLORS, SHAPES, SIZES, Scene

ATTRIBUTES = ("shape", "colour", "size", "place")


def tile_index(x: float, y: float, rows: int, cols: int) -> int:
    """Raster index of the tile of a rows x cols tiling of the unit square that holds (x, y)."""
    return min(int(y * rows), rows - 1) * cols + min(int(x * cols), cols - 1)


def tiling(n: int) -> tuple[int, int]:
    """rows x cols of n tiles, rows <= cols (as `models/queries.grid_homes` lays them out)."""
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def object_rows(
    encode: Callable[[torch.Tensor], torch.Tensor], scenes: list[Scene], batch_size: int = 100
) -> tuple[torch.Tensor, np.ndarray]:
    """(features [M, C], labels [M, 5]) for every object of `scenes`.

    `encode` maps pixels [B, 3, H, W] to a map [B, T, C] whose T rows tile the canvas in raster
    order: a grid of cells (without the pooled row) or the N image tokens."""
    features, labels = [], []
    colours = list(COLORS)
    with torch.no_grad():
        for first in range(0, len(scenes), batch_size):
            chunk = scenes[first : first + batch_size]
            tiles = encode(pixels_from([np.asarray(render(s)) for s in chunk])).float()
            rows, cols = tiling(tiles.shape[1])
            for j, scene in enumerate(chunk):
                for o in scene.objects:
                    x, y = o.x / scene.width, o.y / scene.height
                    features.append(tiles[j, tile_index(x, y, rows, cols)])
                    labels.append(
                        (
                            SHAPES.index(o.shape),
                            colours.index(o.color),
                            SIZES.index(o.size),
                            int(x * cols % 1 >= 0.5),
                            int(y * rows % 1 >= 0.5),
                        )
                    )
    return torch.stack(features), np.array(labels)


def linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, train: int, steps: int = 300) -> float:
    """Held-out accuracy of a linear classifier fitted with Adam on standardised features."""
    generator = torch.Generator().manual_seed(0)
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-5)
    probe = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        probe.weight.normal_(0, x.shape[1] ** -0.5, generator=generator)
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), 3e-3, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(probe(x[:train]), y[:train]).backward()
        optimizer.step()
    with torch.no_grad():
        return float((probe(x[train:]).argmax(1) == y[train:]).float().mean())


def probe_objects(features: torch.Tensor, labels: np.ndarray, train_share: float = 0.7) -> dict[str, float]:
    """Linear-probe accuracy for each attribute of `ATTRIBUTES` (place: mean of x and y)."""
    y = torch.from_numpy(labels).long()
    train = int(len(y) * train_share)
    sizes = (len(SHAPES), len(COLORS), len(SIZES), 2, 2)
    scores = [linear_probe(features, y[:, a], k, train) for a, k in enumerate(sizes)]
    return {"shape": scores[0], "colour": scores[1], "size": scores[2], "place": (scores[3] + scores[4]) / 2}
