"""Bring your own language model: a local Hugging Face causal LM folder as VL-GPT's backbone.

    hf_model, tokenizer = load_local_lm("models/my-llama")   # checks, then loads (offline, no remote code)
    save_lm(run / "pretrain" / "model" / LM_DIR, hf_model, tokenizer)   # its config + tokenizer files
    hf_model, tokenizer = rebuild_lm(run / "pretrain" / "model" / LM_DIR)  # from config; weights loaded after

Only folders that need no code of their own load: a config.json (or tokenizer_config.json) with
`auto_map` is refused, and weights must be safetensors. The LM's own tokenizer replaces our BPE for
the LM stages; `[IMG]` and `[/IMG]` join it as special tokens and the embeddings grow to fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .text_tokenizer import IMG, IMG_END

LM_DIR = "lm"  # inside a pretrain/instruct model folder: the HF config.json and the tokenizer files
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_local_lm(path: str | Path, need_weights: bool = True) -> Path:
    """Refuse what vlgpt never loads: remote code (`auto_map`) and weights that are not safetensors."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such folder (a local Hugging Face model folder with config.json)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing; {path} is not a Hugging Face model folder")
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{file}: not valid JSON ({error})") from None
        if isinstance(data, dict) and "auto_map" in data:
            raise CheckpointError(
                f"{file} asks for remote code (auto_map); vlgpt never runs code from a model "
                "folder. Use a model whose architecture transformers ships (Llama, Qwen2, Mistral, "
                "GPT-2, ...)"
            )
    if need_weights:
        require_safetensors(path)
    return path


def require_safetensors(folder: Path, pattern: str = "*.safetensors") -> None:
    """Refuse a model folder whose weights are missing or only pickled, naming the pickled file."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is missing")
    if any(folder.glob(pattern)):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise CheckpointError(
            f"{folder / pickled[0]} holds pickled weights; vlgpt loads safetensors only. Convert "
            "them first (save_pretrained(..., safe_serialization=True) where you trust the file)"
        )
    raise CheckpointError(f"{folder} has no {pattern} weights")


class HFTextTokenizer:
    """A Hugging Face tokenizer behind TextTokenizer's interface (ids of BOS, EOS, PAD, [IMG], [/IMG];
    encode without special tokens, decode without them), so sequences and generation need no change."""

    def __init__(self, tokenizer):
        from tokenizers import AddedToken

        self.tokenizer = tokenizer
        missing = [t for t in (IMG, IMG_END) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(
                [AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True
            )
        if tokenizer.eos_token_id is None:
            raise CheckpointError(
                "the language model's tokenizer has no eos_token; set one in its tokenizer_config.json"
            )
        self.eos_id = tokenizer.eos_token_id
        # Families without a BOS (Qwen2) start sequences with EOS, as GPT-2 does with <|endoftext|>.
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.img_id, self.img_end_id = tokenizer.convert_tokens_to_ids([IMG, IMG_END])

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> HFTextTokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError, ImportError) as error:
            raise CheckpointError(
                f"{path}: no usable tokenizer ({str(error).splitlines()[0][:300]})"
            ) from None
        return cls(tokenizer)

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def _fit_embeddings(model, tokenizer: HFTextTokenizer) -> None:
    """Grow the embedding (and a tied or separate LM head) to hold [IMG] and [/IMG]."""
    if tokenizer.vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(tokenizer.vocab_size)


def load_local_lm(path: str | Path):
    """A local HF causal LM and its tokenizer, in fp32 (training keeps fp32 master weights)."""
    from transformers import AutoModelForCausalLM

    path = check_local_lm(path)
    tokenizer = HFTextTokenizer.load(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=torch.float32,
        )
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path}: cannot load as a causal LM ({str(error).splitlines()[0][:300]})"
        ) from None
    _fit_embeddings(model, tokenizer)
    return model, tokenizer


def save_lm(directory: Path, model, tokenizer: HFTextTokenizer) -> None:
    """The LM's config.json and tokenizer files; its weights live in the VL-GPT model.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    tokenizer.save(directory)


def rebuild_lm(directory: Path):
    """The LM from its saved config (random weights, to be overwritten) and its tokenizer; offline."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = check_local_lm(directory, need_weights=False)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, dtype=torch.float32)
    tokenizer = HFTextTokenizer.load(directory)
    _fit_embeddings(model, tokenizer)
    return model, tokenizer
