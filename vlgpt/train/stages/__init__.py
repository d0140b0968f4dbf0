"""The five stages, one file each, in training order; importing this package registers them.

| stage     | file           | trains                                   | frozen             |
|-----------|----------------|------------------------------------------|--------------------|
| clip      | `clip.py`      | image tower + text tower (or `--vision`) | —                  |
| tokenizer | `tokenizer.py` | image tokenizer + detokenizer            | clip               |
| decoder   | `decoder.py`   | pixel decoder (the codec end to end)     | clip's text tower  |
| pretrain  | `pretrain.py`  | VL-GPT transformer and its two heads     | the codec          |
| instruct  | `instruct.py`  | the same, on conversations (LoRA option) | the codec          |

Each is a `base.Stage` registered with `@register_stage`; `lm.py` holds what the last two share.
A run folder holds one sub-folder per stage; each stage's deliverable is `RUN/<stage>/model/`.
"""

from . import clip, decoder, instruct, pretrain, tokenizer  # noqa: F401 - registers the five stages
from .base import Stage, StageInputs, get_stage, list_stages, register_stage

__all__ = ["Stage", "StageInputs", "get_stage", "list_stages", "register_stage"]
