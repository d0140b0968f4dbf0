"""Training: the shared engine and the stages."""

from __future__ import annotations

import gc
from pathlib import Path

from ..core.config import ConfigError
from ..core.overrides import recipe_data, resolve_configs, resolved_yaml
from ..data.formats import detect_format
from ..data.sources import WORLD
from .distributed import process_group
from .engine import Trainer, TrainingError
from .stages import StageInputs, get_stage, list_stages


def resolve_data(yaml_file: str | None, data: str | None = None, val_data: str | None = None) -> dict:
    """{data, val_data} a stage reads: what is given, else the recipe file's data: section, else the
    Shapes world (and its val split)."""
    recorded = recipe_data(yaml_file)
    return {"data": data or recorded.get("data", WORLD), "val_data": val_data or recorded.get("val_data")}


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
    decoder: str | Path | None = None,
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
        from .stages.clip import VisionImport

        return VisionImport(vision, inputs).run(run / "clip")
    if decoder is not None:
        if stage != "decoder":
            raise ConfigError(
                "--decoder belongs to the decoder stage: `vlgpt train decoder --decoder PATH` makes the "
                "diffusers pipeline the run's frozen decoder; train the tokenizer after it"
            )
        from .stages.decoder import DecoderImport

        return DecoderImport(decoder).run(run / "decoder")
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
        metrics = trainer.fit()
        if dist.active:
            # The DDP / FSDP wrappers hold the process group: free them now, while the interpreter is
            # whole and before the group is destroyed. Left to the garbage collector at exit, gloo's
            # teardown now and then aborted a finished job ("terminate called without an active
            # exception", exit -6).
            del trainer, task
            gc.collect()
    return metrics


__all__ = [
    "Trainer",
    "TrainingError",
    "get_stage",
    "list_stages",
    "resolve_configs",
    "resolve_data",
    "train_stage",
]
