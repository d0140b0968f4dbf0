"""Training: the shared engine and the stages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import ConfigError, ModelConfig, TrainConfig, apply_overrides, from_dict, load_yaml, preset, to_dict
from .distributed import process_group
from .engine import Trainer, TrainingError


def resolve_configs(stage: str, preset_name: str, yaml_file: str | None = None, model_overrides: tuple = (),
                    train_overrides: dict | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Preset, then YAML (`model:` / `train:` sections), then CLI overrides: the last one wins."""
    chosen = preset(preset_name)
    if stage not in chosen.train:
        raise ConfigError(f"preset {preset_name!r} has no recipe for stage {stage!r}")
    model, train = chosen.model, chosen.train[stage]
    if yaml_file:
        data = load_yaml(yaml_file)
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise ConfigError(f"{yaml_file}: unknown section(s) {', '.join(sorted(unknown))}; use model: and train:")
        if "model" in data:
            model = from_dict(ModelConfig, _merge(to_dict(model), data["model"]), f"{yaml_file}:model")
        if "train" in data:
            train = from_dict(TrainConfig, _merge(to_dict(train), data["train"]), f"{yaml_file}:train")
    model = apply_overrides(model, list(model_overrides))
    if train_overrides:
        train = dataclasses.replace(train, **train_overrides)
    return model, train


def _merge(base: dict, update: dict) -> dict:
    if not isinstance(update, dict):
        raise ConfigError(f"expected a mapping, got {update!r}")
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def train_stage(stage: str, run: str | Path, *, preset_name: str = "small", data: str = "world",
                val_data: str | None = None, yaml_file: str | None = None, model_overrides: tuple = (),
                train_overrides: dict | None = None, resume: bool = False, progress: bool = True,
                clip: str | Path | None = None, vision: str | Path | None = None) -> dict:
    """Train one stage into RUN/<stage>/; returns the final evaluation metrics.

    Under torchrun every process runs this same call; they form one data-parallel job."""
    from .lm_stages import InstructStage, PretrainStage
    from .stages import STAGE_CLASSES

    STAGE_CLASSES = {**STAGE_CLASSES, "pretrain": PretrainStage, "instruct": InstructStage}
    if stage not in STAGE_CLASSES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGE_CLASSES)}")
    model_config, train_config = resolve_configs(stage, preset_name, yaml_file, model_overrides, train_overrides)
    run = Path(run)
    common = dict(model_config=model_config, data=data, seed=train_config.seed, eval_size=train_config.eval_size,
                  val_data=val_data)
    if vision is not None:
        if stage != "clip":
            raise ConfigError("--vision belongs to the clip stage: `vlgpt train clip --vision PATH` makes the "
                              "checkpoint the run's frozen CLIP, and later stages read it from there")
        from .stages import VisionImport

        return VisionImport(vision, model_config, data, train_config.seed, train_config.eval_size, val_data).run(
            run / "clip")
    with process_group(train_config) as dist:
        if stage in ("pretrain", "instruct"):
            lora = (train_config.lora_rank, train_config.lora_alpha, train_config.lora_dropout)
            extra = {"replay": train_config.replay} if stage == "instruct" else {}
            task = STAGE_CLASSES[stage](**common, run=run, lora=lora, lm_path=train_config.lm or None, **extra)
        elif stage == "clip":
            task = STAGE_CLASSES[stage](**common)
        elif stage == "tokenizer":
            task = STAGE_CLASSES[stage](**common, clip_dir=Path(clip) if clip else run)
        else:
            task = STAGE_CLASSES[stage](**common, clip_dir=Path(clip) if clip else run,
                                        codec_dir=run if (run / "tokenizer" / "model").is_dir() else None)
        trainer = Trainer(task, train_config, run / stage, resume=resume, progress=progress, dist=dist)
        return trainer.fit()


__all__ = ["Trainer", "TrainingError", "resolve_configs", "train_stage"]
