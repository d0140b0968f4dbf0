"""Conversations for instruction tuning from a dataset folder: LLaVA JSON, or captions as chats.

A LLaVA entry's turns become chat messages (`human` -> user, `gpt` -> assistant) whose `<image>`
placeholders become image parts, in order; the labels then come from the turns themselves
(`sequences.chat_segments` trains assistant spans only), never from searching re-tokenized strings.
An image-caption row becomes "Describe the image." -> its caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.prompts import DESCRIBE
from .check import SPEAKERS, conversation_problems
from .formats import DatasetError, Example, read_examples
from .images import to_array

IMAGE = "<image>"


def llava_messages(conversations: list[dict]) -> list[dict]:
    """LLaVA turns -> chat messages with text and image parts (images consumed in order)."""
    messages = []
    for turn in conversations:
        parts = []
        for i, piece in enumerate(turn["value"].split(IMAGE)):
            if i:
                parts.append({"type": "image"})
            if piece.strip():
                parts.append({"type": "text", "text": piece.strip()})
        messages.append({"role": SPEAKERS[turn["from"]], "content": parts})
    return messages


class ConversationSource:
    """Examples of a dataset as (messages, images as RGB arrays), with a held-out part for evaluation."""

    def __init__(
        self, path: str | Path, image_size: int, seed: int = 0, holdout: int = 0, part: str = "train"
    ):
        examples = []
        for example in read_examples(path):
            n_images = len(example.image_paths) or (1 if example._images else 0)
            if example.conversations is not None:
                problems = conversation_problems(example.conversations, n_images)
                if problems:
                    raise DatasetError(
                        f"{path}: example {example.id}: {problems[0]} "
                        f"(`vlgpt data check {path}` lists every problem)"
                    )
                examples.append(example)
            elif example.caption and n_images == 1:
                examples.append(example)
        if not examples:
            raise DatasetError(f"{path} has no conversations or image-caption pairs to instruction-tune on")
        holdout = min(holdout, len(examples) // 10)
        if holdout:
            examples = (
                examples[len(examples) - holdout :] if part == "val" else examples[: len(examples) - holdout]
            )
        self.examples, self.image_size, self.seed = examples, image_size, seed

    def __len__(self) -> int:
        return len(self.examples)

    def _example(self, index: int) -> Example:
        epoch, offset = divmod(index, len(self.examples))
        return self.examples[
            int(np.random.default_rng([self.seed, epoch, 5]).permutation(len(self.examples))[offset])
        ]

    def get(self, index: int) -> tuple[list[dict], list[np.ndarray]]:
        example = self._example(index)
        images = [to_array(image, self.image_size) for image in example.load_images()]
        if example.image_paths:
            example._images = None  # decoded again next epoch rather than held for the whole run
        if example.conversations is None:
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DESCRIBE}]},
                {"role": "assistant", "content": [{"type": "text", "text": example.caption}]},
            ]
        else:
            messages = llava_messages(example.conversations)
        return messages, images
