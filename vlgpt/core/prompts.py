"""Every text template the model is trained with and queried with, in one place.

Prompts are the contract between training and inference: a caption asked for with other words than
the ones instruction tuning used is a different task to a small model. Training (`train/`), the
pipeline, evaluation, the demo and the dataset export all take their wording from here.
"""

from __future__ import annotations

DESCRIBE = "Describe the image."  # instruct: an image -> its caption
DRAW_PREFIX = "Draw: "  # instruct: text -> (a layout plan on Shapes, then) an image


def t2i_prompt(caption: str) -> str:
    """VL-GPT's text-to-image pre-training prompt: "An image of <caption>." followed by [IMG]."""
    caption = caption.rstrip(".")
    return f"An image of {caption[0].lower() + caption[1:]}." if caption else "An image."


def draw_prompt(description: str) -> str:
    """The instruction that asks the chat model for a picture: "Draw: <description>"."""
    return f"{DRAW_PREFIX}{description}"
