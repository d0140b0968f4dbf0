"""Hard negative captions: a caption with one word swapped for another word used in the same places.

A contrastive image tower learns what tells a batch's captions apart most cheaply (colour, place)
and can ignore the rest (Chen et al. 2021; NegCLIP, Yuksekgonul et al. 2023). NegCLIP adds, for
each caption, a copy with words swapped, which the image must score below its own caption; the
image tower then has to see every word a caption says. NegCLIP swaps words by part of speech; we
learn the swaps from the captions themselves, for any dataset: two words are substitutes when they
occur between the same neighbours ("a small _ circle": red, blue; "red _ and": circle, star).

table = SubstitutionTable.fit(captions)
table.negative("A red circle left of a blue star.", rng)   # "A red circle left of a green star."
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

_WORD = re.compile(r"[A-Za-z]+|\d+")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class SubstitutionTable:
    """Per word, the words seen in the same (previous word, next word) contexts, most shared first."""

    def __init__(self, substitutes: dict[str, list[str]]):
        self.substitutes = substitutes

    @classmethod
    def fit(
        cls, captions: list[str], min_count: int = 3, min_shared: int = 2, per_word: int = 8
    ) -> SubstitutionTable:
        """Substitutes of each word seen `min_count` times: words sharing at least `min_shared`
        distinct contexts with it, the `per_word` sharing most. Words are letters or digits, compared
        lower-cased; a context is the word before and after (sentence ends included)."""
        counts: Counter[str] = Counter()
        contexts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for caption in captions:
            words = ["<s>", *_words(caption), "</s>"]
            for i in range(1, len(words) - 1):
                counts[words[i]] += 1
                contexts[(words[i - 1], words[i + 1])][words[i]] += 1
        shared: dict[str, Counter[str]] = defaultdict(Counter)
        for fillers in contexts.values():
            common = [w for w, _ in fillers.most_common(64) if counts[w] >= min_count]
            for a in common:
                for b in common:
                    if a != b:
                        shared[a][b] += 1
        return cls(
            {
                word: [b for b, n in others.most_common(per_word) if n >= min_shared]
                for word, others in shared.items()
                if any(n >= min_shared for n in others.values())
            }
        )

    def negative(self, caption: str, rng: np.random.Generator) -> str | None:
        """The caption with one word (chosen at random among those with substitutes) replaced by one
        of its substitutes, capitalisation kept; None when no word of it has any."""
        spans = [m for m in _WORD.finditer(caption) if m.group().lower() in self.substitutes]
        if not spans:
            return None
        match = spans[int(rng.integers(len(spans)))]
        options = self.substitutes[match.group().lower()]
        new = options[int(rng.integers(len(options)))]
        if match.group()[0].isupper():
            new = new[0].upper() + new[1:]
        return caption[: match.start()] + new + caption[match.end() :]
