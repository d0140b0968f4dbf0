"""`--quantize int8`: weight-only int8 for the transformer's linear layers, with torchao (PyTorch's
own quantization library; `pip install 'vlgpt[quant]' -c constraints.txt`).

    pipeline = vlgpt.load("runs/demo", quantize="int8")

Each selected `nn.Linear` keeps its module and gets an int8 weight with one scale per output row
(torchao's `Int8WeightOnlyConfig`); activations stay in the model's dtype. What is quantized: the
linear layers of the backbone (attention, MLP, the text head). What is not: the image input
projection and the image head, which regress embeddings the pixel decoder reads (an error there is
a blur, not a wrong token), the image codec, and any weight tied to an embedding. Speed and quality
against fp32 and bf16 are in docs/BENCHMARKS.md, "Inference dtypes and int8".
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from torch import nn

QUANTIZE = ("int8",)
KEEP = ("image_in", "image_head")  # VLGPT's image projection and image head stay in float


class QuantizeError(ValueError):
    """A quantization that cannot be done here; the message says what to do instead."""


@contextmanager
def _quiet(*names: str):
    """torchao logs, at import, every optional CUDA kernel library it cannot load on this machine."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def require(scheme: str):
    """torchao's pieces for `scheme`, or QuantizeError saying what to install or choose."""
    if scheme not in QUANTIZE:
        raise QuantizeError(f"unknown quantization {scheme!r}; choose one of {', '.join(QUANTIZE)}")
    try:
        with _quiet("torchao", "torch.utils._pytree"):
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise QuantizeError(
            f"--quantize int8 needs torchao ({error}); install it with "
            "pip install 'vlgpt[quant]' -c constraints.txt, or leave --quantize out"
        ) from None
    return Int8WeightOnlyConfig, quantize_


def quantizable(model: nn.Module) -> list[str]:
    """Names of the linear layers `quantize_weights` converts (see the module docstring)."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.split(".")[0] not in KEEP
        and id(module.weight) not in embedded
    ]


def quantize_weights(model: nn.Module, scheme: str | None) -> nn.Module:
    """Quantize `model` in place (None: leave it); returns it. Inference only: no gradients."""
    if scheme is None:
        return model
    config_class, quantize_ = require(scheme)
    names = set(quantizable(model))
    if not names:
        raise QuantizeError("--quantize int8: this model has no linear layers to quantize")
    quantize_(
        model,
        config_class(set_inductor_config=False),
        filter_fn=lambda module, name: name in names,
    )
    return model
