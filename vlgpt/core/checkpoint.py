"""Model folders: `config.json` + `model.safetensors`, written atomically, read with clear errors.

Weights are only ever safetensors. Training state (optimizer, scheduler, RNG) lives beside a
checkpoint in `state.pt`, is written by us alone, and is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class CheckpointError(ValueError):
    """A model folder that is missing, damaged or for something else; the message names the file."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What a plain `open(..., "w")` gives a new file here (usually 0644). safetensors writes its files
# 0600, so a model folder copied or exported for another user could not be read by them.
FILE_MODE = 0o666 & ~_umask()


def fsync_tree(path: Path) -> None:
    """fsync every file under `path` (and the folder), giving each the usual file mode."""
    for file in path.rglob("*"):
        if file.is_file():
            os.chmod(file, FILE_MODE)
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(path)


@contextmanager
def atomic_dir(target: Path):
    """Yields a temporary sibling folder that replaces `target` (fsynced) only when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        if target.exists():
            old = target.with_name(target.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def tied_names(state: dict[str, torch.Tensor]) -> set[str]:
    """Names whose tensor is an earlier name's (tied weights, e.g. an HF LM head tied to its embedding).
    safetensors refuses shared tensors, so the first name alone is written and loading re-ties the rest."""
    seen, tied = set(), set()
    for name, tensor in state.items():
        if tensor.numel() == 0:
            continue
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
        (tied.add(name) if key in seen else seen.add(key))
    return tied


def weights_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state for a safetensors file: contiguous CPU tensors, tied duplicates left out."""
    state = model.state_dict()
    tied = tied_names(state)
    return {k: v.detach().contiguous().cpu() for k, v in state.items() if k not in tied}


def save_model(directory: Path, model: nn.Module, config: dict) -> None:
    """Write config.json and model.safetensors into an existing folder."""
    state = weights_to_save(model)
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def read_config(directory: Path, expected_kind: str | None = None) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a model folder (it does not exist)")
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; {directory} is not a finished vlgpt model folder")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    if "auto_map" in config or config.get("trust_remote_code"):
        raise CheckpointError(
            f"{file} asks for remote code (auto_map); vlgpt never runs code from a model folder"
        )
    if expected_kind is not None and config.get("kind") != expected_kind:
        raise CheckpointError(
            f"{file} describes a {config.get('kind', 'foreign')!r} model, not {expected_kind!r}; "
            f"point to the {expected_kind} stage's folder"
        )
    return config


def renamed(state: dict, prefixes: dict[str, str]) -> dict:
    """`state` with every key that starts with an old prefix (a key of `prefixes`) moved to the new one:
    how a model (its `RENAMED`) still reads weights saved before a part of it was renamed."""
    for old, new in prefixes.items():
        state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
    return state


def load_weights(
    directory: Path, model: nn.Module, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Load model.safetensors into `model`, naming the file and the tensors on any mismatch.

    The tensors are read onto `device` and cast to `dtype` (floating ones; None keeps the file's). A
    model built under `devices.empty_parameters()` (parameters on the meta device) takes the file's
    tensors as its parameters, so the weights exist once; its buffers move to `device` after."""
    file = Path(directory) / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        state = load_file(str(file), device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file} is damaged or not a safetensors file ({error})") from None
    state = renamed(state, getattr(model, "RENAMED", {}))  # weights saved under a model's older names
    own = model.state_dict()
    empty = any(p.is_meta for p in model.parameters())
    shared = _shared_parameters(model) if empty else {}  # meta tensors have no storage to compare
    tied = set(shared) if empty else tied_names(own)
    missing = sorted(set(own) - set(state) - tied)
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            filter(
                None,
                [
                    f"missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}" if missing else "",
                    f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                    f"wrong shapes {'; '.join(wrong[:3])}" if wrong else "",
                ],
            )
        )
        raise CheckpointError(
            f"{file} does not fit this model ({details}); was it saved with another config?"
        )
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=not tied, assign=empty)  # tied names follow the weight they share
    for name, owner in shared.items():  # assignment replaced the owner's tensor; re-point its aliases
        module, _, attr = name.rpartition(".")
        setattr(model.get_submodule(module), attr, model.get_parameter(owner))
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def _shared_parameters(model: nn.Module) -> dict[str, str]:
    """{alias: first name} for parameters registered under more than one name (tied weights)."""
    first, aliases = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def save_state(path: Path, state: dict) -> None:
    torch.save(state, path)


def load_state(path: Path) -> dict:
    """Our own training state; `weights_only=True` so a crafted file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except Exception as error:  # unpickling errors come in many types
        raise CheckpointError(
            f"{path} is damaged or not a vlgpt training state ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]})"
        ) from None
