"""Image-caption streams for the training stages: the Shapes world, a dataset folder or shards.

A source maps a sample index to (image, caption, group). The stream is a pure function of the
index, so the data position of a run is one integer and resuming is exact. `group` names what a
caption says (two scenes with the same objects share it), so contrastive training does not push
equivalent captions apart and retrieval counts them as hits.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..world import language
from ..world.dataset import ShapesWorld
from ..world.render import render
from ..world.scene import Scene
from .formats import DatasetError, detect_format, read_examples
from .images import to_array
from .streaming import StreamingSource

WORLD = "world"


def scene_key(scene: Scene) -> str:
    """What a complete caption of the scene says, independent of template and object order."""
    return "|".join(sorted(f"{o.size} {o.color} {o.shape}" for o in scene.objects))


class WorldSource:
    """Shapes-world scenes rendered on the fly, each with a caption from a random template."""

    def __init__(self, split: str, image_size: int, seed: int = 0):
        self.world = ShapesWorld(split, image_size, image_size, seed=seed)
        self.image_size = image_size
        self.has_scenes = True
        self._cache: OrderedDict[int, tuple] = OrderedDict()

    def get(self, index: int) -> tuple[np.ndarray, str, str]:
        if index in self._cache:
            return self._cache[index]
        scene = self.world.scene(index)
        rng = np.random.default_rng([self.world.seed + index, 3])
        item = (np.asarray(render(scene), dtype=np.uint8), language.captions(scene, rng)[0], scene_key(scene))
        self._cache[index] = item
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        return item

    def scene(self, index: int) -> Scene:
        return self.world.scene(index)

    def corpus(self, n: int = 3000) -> list[str]:
        """Text to train the BPE tokenizer on: everything the world says, in all its kinds."""
        texts = []
        for i in range(n):
            row = self.world[i]
            texts += row["references"] + [q["question"] + " " + q["answer"] for q in row["questions"]]
            texts.append(language.layout(self.world.scene(i)))
            if row["edit"]:
                texts.append(row["edit"]["instruction"])
        for i in range(200):
            texts += [s["text"] for s in self.world.document(i) if s["type"] == "text"]
            episode = self.world.episode(i, 2)
            texts.append(episode["prompt"] + " " + " ".join(d["answer"] for d in episode["demos"]))
        texts += [" ".join(language.MADE_UP_WORDS)] * 10
        return texts


class DatasetSource:
    """A dataset folder in any supported format; epochs are reshuffled deterministically."""

    def __init__(
        self, path: str | Path, image_size: int, seed: int = 0, holdout: int = 0, part: str = "train"
    ):
        examples = [e for e in read_examples(path) if e.caption and (e.image_paths or e._images)]
        if not examples:
            raise DatasetError(
                f"{path} has no image-caption pairs (every stage before pretrain needs captions)"
            )
        holdout = min(holdout, len(examples) // 10)
        if holdout == 0:  # a separate validation set (or none): use every example
            self.examples = examples
        else:
            self.examples = (
                examples[len(examples) - holdout :] if part == "val" else examples[: len(examples) - holdout]
            )
        if not self.examples:
            raise DatasetError(
                f"{path} is too small to hold out a validation part; add data or pass --val-data"
            )
        self.image_size, self.seed = image_size, seed
        self.has_scenes = all("scene" in e.meta for e in self.examples)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.examples)

    def _position(self, index: int) -> int:
        epoch, offset = divmod(index, len(self.examples))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        return int(order[offset])

    def get(self, index: int) -> tuple[np.ndarray, str, str]:
        position = self._position(index)
        example = self.examples[position]
        if position not in self._cache:
            self._cache[position] = to_array(example.load_images()[0], self.image_size)
            example._images = None  # keep only the resized array
            if len(self._cache) > 20000:
                self._cache.popitem(last=False)
        return self._cache[position], example.caption, example.caption.lower().strip(" .")

    def scene(self, index: int) -> Scene:
        import json

        scene = self.examples[self._position(index)].meta["scene"]
        scene = Scene.from_dict(json.loads(scene) if isinstance(scene, str) else scene)
        return scene.as_square(self.image_size)  # in the pixels `get` returns, whatever the data's size

    def corpus(self, n: int = 100000) -> list[str]:
        return [e.caption for e in self.examples[:n]]


def make_source(data: str, image_size: int, seed: int = 0, part: str = "train", holdout: int = 0):
    """`world` (the Shapes world, train or val split), a dataset folder, or WebDataset shards (streamed)."""
    if data == WORLD:
        return WorldSource("train" if part == "train" else "val", image_size, seed)
    if detect_format(data) == "wds":
        return StreamingSource(data, image_size, seed, holdout=holdout, part=part)
    return DatasetSource(data, image_size, seed, holdout=holdout, part=part)
