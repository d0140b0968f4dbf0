"""Rows of the Shapes world: one scene with everything said about it.

`ShapesWorld(split)[i]` is a plain JSON-friendly dict, reproducible from (split, i): the scene, a
caption and reference captions, questions of every kind, and an edit with its target scene.
Images are rendered on demand (`world.image(row)`), so rows are cheap to make and to store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import language
from .render import render
from .scene import Scene
from .splits import HELD_OUT_PAIRS, check_split, sampler_for, split_seed

NUM_REFERENCES = 5


@dataclass(frozen=True)
class ShapesWorld:
    """An endless, deterministic dataset: row i of a split is always the same row."""

    split: str = "train"
    width: int = 64
    height: int = 64
    max_objects: int = 4
    seed: int = 0  # offset into the split's seed block, so several disjoint runs can share a split

    def __post_init__(self) -> None:
        check_split(self.split)
        sampler_for(self.split, self.width, self.height, self.max_objects)  # validates sizes

    @property
    def excluded(self) -> frozenset[tuple[str, str]]:
        """Pairs that this split's text must never name (none for comp-test)."""
        return frozenset() if self.split == "comp-test" else HELD_OUT_PAIRS

    def scene(self, index: int) -> Scene:
        sampler = sampler_for(self.split, self.width, self.height, self.max_objects)
        return sampler.sample(split_seed(self.split, self.seed + index))

    def __getitem__(self, index: int) -> dict:
        seed = split_seed(self.split, self.seed + index)
        scene = self.scene(index)
        rng = np.random.default_rng([seed, 1])  # independent of the scene sampler's stream
        references = language.captions(scene, rng, NUM_REFERENCES)
        change = language.edit(scene, rng, self.excluded)
        # Its own stream, so that the row's other fields are what they were before it existed.
        impossible = language.impossible_edit(scene, np.random.default_rng([seed, 3]), self.excluded)
        return {
            "id": f"{self.split}-{self.seed + index:08d}",
            "split": self.split,
            "seed": seed,
            "scene": scene.to_dict(),
            "caption": references[0],
            "references": references,
            "questions": language.questions(scene, rng, self.excluded),
            "edit": None
            if change is None
            else {"kind": change.kind, "instruction": change.instruction, "target": change.target.to_dict()},
            "impossible_edit": None if impossible is None else impossible.to_dict(),
        }

    def image(self, row_or_scene: dict | Scene) -> Image.Image:
        scene = row_or_scene if isinstance(row_or_scene, Scene) else Scene.from_dict(row_or_scene["scene"])
        return render(scene)

    def document(self, index: int, max_images: int = 4) -> list[dict]:
        rng = np.random.default_rng([split_seed(self.split, self.seed + index), 2])
        return language.document(self.scene(index), rng, self.excluded, max_images)

    def episode(self, index: int, k: int, task: str = "color-words") -> dict:
        return language.episode(
            split_seed(self.split, self.seed + index),
            k,
            width=self.width,
            height=self.height,
            task=task,
            excluded=self.excluded,
        )
