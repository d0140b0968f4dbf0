"""vlgpt: VL-GPT, one transformer that reads and writes text and images."""

import logging

__version__ = "0.1.0"


class _ImportNoise(logging.Filter):
    """Drops two warnings torchao (the `quant` extra, also imported by peft and transformers) logs on
    import that say nothing about vlgpt's use of it: CUDA kernels of its wheel built for another Python
    (mxfp8, cutlass; `--quantize int8` needs neither) and an Enum registration torch now deprecates."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            (record.name.startswith("torchao") and message.startswith("Failed to load"))
            or "is an Enum subclass and is now natively supported" in message
        )


logging.getLogger("torchao").addFilter(_ImportNoise())
logging.getLogger("torch.utils._pytree").addFilter(_ImportNoise())


def load(path, device: str = "cpu", dtype: str = "fp32", quantize: str | None = None):
    """A trained run -> pipeline with caption, ask, imagine, edit and chat (see vlgpt.inference.pipeline), on
    `device` (cpu | cuda | mps) in `dtype` (fp32 | bf16 | fp16); `quantize="int8"`: int8 weights."""
    from .inference.pipeline import load as _load

    return _load(path, device, dtype, quantize)
