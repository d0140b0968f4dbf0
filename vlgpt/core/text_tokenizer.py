"""BPE text tokenizer trained with Hugging Face `tokenizers`, saved as `tokenizer.json`.

One tokenizer serves the CLIP text tower and, later, the VL-GPT language model. `[IMG]` and
`[/IMG]` are special tokens from the start, so image spans never collide with text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
IMG, IMG_END = "[IMG]", "[/IMG]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMG, IMG_END)


class TextTokenizer:
    """A thin wrapper: encode/decode plus batching to padded id tensors."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {', '.join(missing)}")
        self.pad_id, self.bos_id, self.eos_id = (tokenizer.token_to_id(t) for t in (PAD, BOS, EOS))
        self.img_id, self.img_end_id = tokenizer.token_to_id(IMG), tokenizer.token_to_id(IMG_END)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024) -> TextTokenizer:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        # Byte-level pre-tokenization: any text encodes (no [UNK] for unseen characters).
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {file}")
        try:
            return cls(Tokenizer.from_file(str(file)))
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"{file}: not a valid tokenizer.json ({error})") from None

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def batch(self, texts: list[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids [B, T] ending in [EOS], and lengths [B]; over-long texts are cut."""
        rows = [self.encode(t)[: context_length - 1] + [self.eos_id] for t in texts]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, torch.tensor([len(r) for r in rows])
