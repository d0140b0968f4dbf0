"""Recipes as the user gives them: a preset, then a YAML file (`model:` / `train:` / `data:`
sections), then `--set a.b=value` overrides, the last one winning (`resolve_configs`); the resolved
recipe written back as YAML (`resolved_yaml`), and one typed CLI flag per config field
(`add_config_arguments`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from .config import ConfigError, ModelConfig, TrainConfig, from_dict, to_dict
from .presets import preset


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


def _merge(base: dict, update: dict) -> dict:
    if not isinstance(update, dict):
        raise ConfigError(f"expected a mapping, got {update!r}")
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def apply_overrides(config, overrides: list[str]):
    """`["clip.vision.width=256", "tokenizer.num_tokens=16"]` applied to a nested dataclass."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        path, raw = item.split("=", 1)
        node = data
        keys = path.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a config section")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(
                f"override {item!r}: unknown key {keys[-1]!r}; known: {', '.join(sorted(node))}"
            )
        node[keys[-1]] = _parse_scalar(raw)
    return from_dict(type(config), data, "override")


def _parse_scalar(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_yaml(path: str | Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def add_config_arguments(parser, cls, *, defaults: bool, flag_names: dict[str, str] | None = None) -> None:
    """One typed flag per field of the dataclass `cls`, with the field's help text.

    `defaults=True`: each flag defaults to the field's default (the server's settings); False: a flag
    not given is None, so the caller can tell what was asked for (overrides on top of a preset).
    bool -> --x / --no-x; tuple[T, T] -> two values; tuple[T, ...] -> a repeatable flag; X | None -> X.
    """
    import argparse

    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        flag = (flag_names or {}).get(item.name, "--" + item.name.replace("_", "-"))
        kind, help_text = hints[item.name], item.metadata["help"]
        default = item.default if defaults else None
        common = {"dest": item.name, "help": help_text}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **common)
            continue
        args = typing.get_args(kind)
        metavar = flag[2:].upper().replace("-", "_")
        if typing.get_origin(kind) is tuple and args[-1] is Ellipsis:
            start = [] if defaults else None
            parser.add_argument(flag, action="append", default=start, metavar=metavar, **common)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(
                flag, type=args[0], nargs=len(args), default=default, metavar=metavar, **common
            )
        else:
            base = next((t for t in args if t is not type(None)), kind)
            if defaults and item.default:
                common["help"] = f"{help_text} (default: {item.default})"
            parser.add_argument(flag, type=base, default=default, metavar=metavar, **common)


def resolved_yaml(model: ModelConfig, train: TrainConfig, data: dict | None = None) -> str:
    """A stage's resolved configs as YAML with `model:` and `train:` sections, and `data:` (the
    `--data` / `--val-data` it read) when given: what `--config` reads, so `vlgpt train STAGE
    --config RUN/STAGE/config.yaml` repeats the recipe on the same data."""
    import yaml

    sections = {"model": to_dict(model), "train": to_dict(train), **({"data": data} if data else {})}
    plain = json.loads(json.dumps(sections))  # tuples -> lists
    return yaml.safe_dump(plain, sort_keys=False)


DATA_KEYS = ("data", "val_data")


def recipe_data(yaml_file: str | Path | None) -> dict:
    """The `data:` section of a recipe file ({data, val_data}), or {} where it has none."""
    if not yaml_file:
        return {}
    section = load_yaml(yaml_file).get("data") or {}
    if not isinstance(section, dict) or set(section) - set(DATA_KEYS):
        raise ConfigError(f"{yaml_file}: the data: section takes only {', '.join(DATA_KEYS)}")
    return {key: value for key, value in section.items() if value is not None}
