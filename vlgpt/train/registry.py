"""The stage registry: each stage class registers itself under its name, in training order.

    @register_stage
    class MyStage(StageBase):
        name = "mystage"

        @classmethod
        def from_run(cls, run, inputs, train, clip): ...  # from StageInputs: the task for RUN/mystage/

`vlgpt/train/__init__.py` imports the built-in stage modules, so they are registered before any
lookup; `train_stage` looks a stage up here; `list_stages()` is what the CLI offers and what tests loop over.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import STAGES, ConfigError, ModelConfig


@dataclass(frozen=True)
class StageInputs:
    """What every stage is built from, whatever else it reads from its run folder."""

    model_config: ModelConfig
    data: str = "world"  # the Shapes world, a dataset folder or WebDataset shards
    seed: int = 0
    eval_size: int = 500  # validation rows (held out of `data` when there is no `val_data`)
    val_data: str | None = None


_STAGES: dict[str, type] = {}


def register_stage(cls: type) -> type:
    if cls.name in _STAGES:
        raise ValueError(
            f"stage {cls.name!r} is registered twice ({_STAGES[cls.name].__name__}, {cls.__name__})"
        )
    _STAGES[cls.name] = cls
    return cls


def list_stages() -> list[str]:
    """Registered stage names, in the order a run trains them (the built-in five, then any others)."""
    return sorted(_STAGES, key=lambda name: STAGES.index(name) if name in STAGES else len(STAGES))


def get_stage(name: str) -> type:
    if name not in _STAGES:
        raise ConfigError(f"unknown stage {name!r}; choose one of {', '.join(list_stages())}")
    return _STAGES[name]
