"""vlgpt: VL-GPT, one transformer that reads and writes text and images."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", dtype: str = "fp32", quantize: str | None = None):
    """A trained run -> pipeline with caption, ask, imagine, edit and chat (see vlgpt.inference.pipeline), on
    `device` (cpu | cuda | mps) in `dtype` (fp32 | bf16 | fp16); `quantize="int8"`: int8 weights."""
    from .inference.pipeline import load as _load

    return _load(path, device, dtype, quantize)
