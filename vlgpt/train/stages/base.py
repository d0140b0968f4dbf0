"""The contract every stage keeps, the registry that finds a stage by name, and the data plumbing the
image-side stages share.

    @register_stage
    class MyStage(Stage):
        name = "mystage"

        @classmethod
        def from_run(cls, run, inputs, train, clip=None): ...  # the task for RUN/mystage/

        def batch(self, start, size): ...  # examples start..start+size, deterministic in `start`
        def loss(self, batch): ...  # (loss, {name: value} to log)
        def tokens(self, batch): ...  # what throughput counts
        def evaluate(self): ...  # {metric: value}, on held-out data
        def export(self, directory): ...  # the finished model folder, through `models/loading.py`

`vlgpt/train/stages/__init__.py` imports the built-in stage modules, so they are registered before
any lookup; `train_stage` looks a stage up here; `list_stages()` is what the CLI offers and what tests
loop over.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from ...core.config import ConfigError, ModelConfig
from ...core.presets import STAGES
from ...data.images import pixels_from
from ...data.sources import make_source
from ...models.loading import load_clip


@dataclass(frozen=True)
class StageInputs:
    """What every stage is built from, whatever else it reads from its run folder."""

    model_config: ModelConfig
    data: str = "world"  # the Shapes world, a dataset folder or WebDataset shards
    seed: int = 0
    eval_size: int = 500  # validation rows (held out of `data` when there is no `val_data`)
    val_data: str | None = None


class Stage(ABC):
    """What the engine (`train/engine.py`) runs: a model, its batches, its loss, its evaluation and
    its export. Subclasses set `name` and `model` and implement the methods below."""

    name = "stage"
    model: torch.nn.Module
    model_config: ModelConfig
    may_leave_parameters_unused = False  # True where a batch may not reach every parameter (DDP)

    @classmethod
    @abstractmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None) -> Stage:
        """The stage for RUN/<name>/, reading what earlier stages left in `run`."""

    @abstractmethod
    def batch(self, start: int, size: int) -> dict: ...

    @abstractmethod
    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]: ...

    @abstractmethod
    def tokens(self, batch: dict) -> int: ...

    @abstractmethod
    def evaluate(self) -> dict: ...

    @abstractmethod
    def export(self, directory: Path) -> None: ...


_STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if cls.name in _STAGES:
        raise ValueError(
            f"stage {cls.name!r} is registered twice ({_STAGES[cls.name].__name__}, {cls.__name__})"
        )
    _STAGES[cls.name] = cls
    return cls


def list_stages() -> list[str]:
    """Registered stage names, in the order a run trains them (the built-in five, then any others)."""
    return sorted(_STAGES, key=lambda name: STAGES.index(name) if name in STAGES else len(STAGES))


def get_stage(name: str) -> type[Stage]:
    if name not in _STAGES:
        raise ConfigError(f"unknown stage {name!r}; choose one of {', '.join(list_stages())}")
    return _STAGES[name]


class PairStage:
    """What the stages that read image-caption pairs share (`clip`, `tokenizer`, `decoder`, and the
    `--vision` import): the training and validation sources, and batches of (pixels, captions, groups)."""

    def __init__(self, inputs: StageInputs):
        self.model_config, self.data, self.seed = inputs.model_config, inputs.data, inputs.seed
        size = inputs.model_config.clip.vision.image_size
        holdout = inputs.eval_size if inputs.val_data is None else 0
        self.source = make_source(inputs.data, size, inputs.seed, "train", holdout)
        self.val_source = make_source(inputs.val_data or inputs.data, size, inputs.seed, "val", holdout)
        self.eval_size = (
            min(inputs.eval_size, len(self.val_source))
            if hasattr(self.val_source, "__len__")
            else inputs.eval_size
        )

    def raw_batch(self, start: int, size: int, source=None) -> tuple[torch.Tensor, list[str], list[str]]:
        items = [(source or self.source).get(i) for i in range(start, start + size)]
        return pixels_from([a for a, _, _ in items]), [c for _, c, _ in items], [g for _, _, g in items]

    def val_batches(self, batch_size: int = 128):
        for start in range(0, self.eval_size, batch_size):
            yield start, self.raw_batch(start, min(batch_size, self.eval_size - start), self.val_source)


class FrozenClipStage(PairStage):
    """Pair stages that read e_v and e_t from the frozen CLIP of the same run (`tokenizer`, `decoder`)."""

    def __init__(self, inputs: StageInputs, clip_dir: Path):
        self.clip, self.text_tokenizer = load_clip(clip_dir)
        if self.clip.config != inputs.model_config.clip:
            # The run's CLIP decides the image size and embedding width, not the preset.
            model_config = dataclasses.replace(inputs.model_config, clip=self.clip.config)
            inputs = dataclasses.replace(inputs, model_config=model_config)
        super().__init__(inputs)

    @torch.no_grad()
    def targets(self, pixels: torch.Tensor, captions: list[str]) -> dict:
        features = self.clip.image_features(pixels)
        e_t = self.clip.embed_captions(captions, self.text_tokenizer) * math.sqrt(self.clip.config.embed_dim)
        return {
            "pixels": pixels,
            "features": features,
            "e_v": self.clip.image_embeddings(pixels, features),
            "e_t": e_t,
            "captions": captions,
        }

    def batch(self, start: int, size: int) -> dict:
        pixels, captions, _ = self.raw_batch(start, size)
        return self.targets(pixels, captions)

    def tokens(self, batch: dict) -> int:
        return batch["e_v"].shape[0] * batch["e_v"].shape[1]
