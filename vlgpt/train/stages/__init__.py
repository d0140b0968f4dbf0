"""The stages, one file each, in training order; importing this package registers them.

| stage     | file           | trains                                   | frozen             |
|-----------|----------------|------------------------------------------|--------------------|
| clip      | `clip.py`      | image tower + text tower (or `--vision`) | —                  |
| vae       | `vae.py`       | the world decoder's autoencoder          | —                  |
| diffusion | `diffusion.py` | the world decoder (latent diffusion)     | vae                |
| tokenizer | `tokenizer.py` | image tokenizer + detokenizer            | clip               |
| decoder   | `decoder.py`   | pixel decoder, or a diffusers one (import) | clip's text tower  |
| pretrain  | `pretrain.py`  | VL-GPT transformer and its two heads     | the codec          |
| instruct  | `instruct.py`  | the same, on conversations (LoRA option) | the codec          |

Each is a `base.Stage` registered with `@register_stage`; `lm.py` holds what the last two share.
A run folder holds one sub-folder per stage; each stage's deliverable is `RUN/<stage>/model/`.
`vae` and `diffusion` train a decoder once (their own run), which `decoder --decoder` imports.
"""

from . import clip, decoder, diffusion, instruct, pretrain, tokenizer, vae  # noqa: F401 - registers them
from .base import Stage, StageInputs, get_stage, list_stages, register_stage

__all__ = ["Stage", "StageInputs", "get_stage", "list_stages", "register_stage"]
