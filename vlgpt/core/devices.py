"""Where inference runs: `--device cpu|cuda|mps`, `--dtype fp32|bf16|fp16`, and models built without
their initial weights.

    device, dtype = resolve("cuda", "bf16")      # DeviceError naming what to do when cuda is not there
    with empty_parameters():                     # parameters on the meta device: no memory, no init
        model = VLGPT(config)
    load_weights(folder, model, device, dtype)   # safetensors straight onto the device, assigned

Building a model normally and then loading a checkpoint into it holds two copies of the weights
(the random ones and the file's); built with `empty_parameters`, the file's tensors become the
parameters and peak memory is about one copy (`benchmarks/load_memory.py`). Buffers are still
built normally: they are small and derived from the config (RoPE tables, pixel statistics), and
checkpoints do not hold the non-persistent ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

DEVICES = ("cpu", "cuda", "mps")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device or dtype that cannot be used here; the message says what to pass instead."""


def resolve_device(name: str | torch.device | None) -> torch.device:
    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICES:
        raise DeviceError(f"unknown device {str(name)!r}; choose one of {', '.join(DEVICES)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "--device cuda: this machine has no CUDA GPU that torch can use (torch.cuda.is_available() "
            "is False; a CPU-only torch build also says so); use --device cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            "--device mps: Apple's Metal backend is not available here (a Mac with Apple silicon or "
            "an AMD GPU and macOS 12.3+ is needed); use --device cpu"
        )
    return device


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype:
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise DeviceError(f"unsupported dtype {name}; choose one of {', '.join(DTYPES)}")
        return name
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    return resolve_device(device), resolve_dtype(dtype)


@contextmanager
def empty_parameters() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (shape and dtype, no storage);
    `checkpoint.load_weights` then assigns the file's tensors in their place."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:  # an alias of a meta parameter stays that alias
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def module_dtype(module: nn.Module) -> torch.dtype:
    return next(p.dtype for p in module.parameters() if p.is_floating_point())
