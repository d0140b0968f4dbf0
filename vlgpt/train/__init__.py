"""Training: the shared engine and the stages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_yaml,
    preset,
    recipe_data,
    resolved_yaml,
    to_dict,
)
from ..data.formats import detect_format
from ..data.sources import WORLD
from . import lm_stages, stages  # noqa: F401 - importing them registers the five stages
from .distributed import process_group
from .engine import Trainer, TrainingError
from .registry import StageInputs, get_stage, list_stages


def resolve_configs(
    stage: str,
    preset_name: str,
    yaml_file: str | None = None,
    model_overrides: tuple = (),
    train_overrides: dict | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """Preset, then YAML (`model:` / `train:` sections), then CLI overrides: the last one wins."""
    chosen = preset(preset_name)
    if stage not in chosen.train:
        raise ConfigError(f"preset {preset_name!r} has no recipe for stage {stage!r}")
    model, train = chosen.model, chosen.train[stage]
    if yaml_file:
        data = load_yaml(yaml_file)
        unknown = set(data) - {"model", "train", "data"}
        if unknown:
            raise ConfigError(
                f"{yaml_file}: unknown section(s) {', '.join(sorted(unknown))}; use model:, train: and data:"
            )
        if "model" in data:
            model = from_dict(ModelConfig, _merge(to_dict(model), data["model"]), f"{yaml_file}:model")
        if "train" in data:
            train = from_dict(TrainConfig, _merge(to_dict(train), data["train"]), f"{yaml_file}:train")
    model = apply_overrides(model, list(model_overrides))
    if train_overrides:
        train = dataclasses.replace(train, **train_overrides)
    return model, train


def resolve_data(yaml_file: str | None, data: str | None = None, val_data: str | None = None) -> dict:
    """{data, val_data} a stage reads: what is given, else the recipe file's data: section, else the
    Shapes world (and its val split)."""
    recorded = recipe_data(yaml_file)
    return {"data": data or recorded.get("data", WORLD), "val_data": val_data or recorded.get("val_data")}


def _merge(base: dict, update: dict) -> dict:
    if not isinstance(update, dict):
        raise ConfigError(f"expected a mapping, got {update!r}")
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def train_stage(
    stage: str,
    run: str | Path,
    *,
    preset_name: str = "small",
    data: str | None = None,
    val_data: str | None = None,
    yaml_file: str | None = None,
    model_overrides: tuple = (),
    train_overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    clip: str | Path | None = None,
    vision: str | Path | None = None,
) -> dict:
    """Train one stage into RUN/<stage>/; returns the final evaluation metrics. `data` / `val_data`
    left None come from the recipe file's data: section, else the Shapes world.

    Under torchrun every process runs this same call; they form one data-parallel job."""
    stage_class = get_stage(stage)
    model_config, train_config = resolve_configs(
        stage, preset_name, yaml_file, model_overrides, train_overrides
    )
    data, val_data = resolve_data(yaml_file, data, val_data).values()
    for path in (data, val_data):  # a missing folder is named now, not after the models are built
        if path not in (None, WORLD):
            detect_format(path)
    run = Path(run)
    inputs = StageInputs(
        model_config, data, seed=train_config.seed, eval_size=train_config.eval_size, val_data=val_data
    )
    if vision is not None:
        if stage != "clip":
            raise ConfigError(
                "--vision belongs to the clip stage: `vlgpt train clip --vision PATH` makes the "
                "checkpoint the run's frozen CLIP, and later stages read it from there"
            )
        from .stages import VisionImport

        return VisionImport(vision, inputs).run(run / "clip")
    with process_group(train_config) as dist:
        task = stage_class.from_run(run, inputs, train_config, clip)
        # As run, in the form --config reads.
        recipe = resolved_yaml(task.model_config, train_config, {"data": data, "val_data": val_data})
        trainer = Trainer(
            task,
            train_config,
            run / stage,
            resume=resume,
            progress=progress,
            dist=dist,
            files={"config.yaml": recipe},
        )
        return trainer.fit()


__all__ = [
    "Trainer",
    "TrainingError",
    "get_stage",
    "list_stages",
    "resolve_configs",
    "resolve_data",
    "train_stage",
]
