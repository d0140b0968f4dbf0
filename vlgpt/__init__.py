"""vlgpt: VL-GPT, one transformer that reads and writes text and images."""

__version__ = "0.1.0"


def load(path):
    """A trained run -> pipeline with caption, ask, imagine, edit and chat (see vlgpt.pipeline)."""
    from .pipeline import load as _load

    return _load(path)
