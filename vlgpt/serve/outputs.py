"""What the server sends back: OpenAI response objects, and answers with images as markdown.

An OpenAI chat message's content is a string, so images the model draws travel inside it as
markdown images with data URIs, each on its own paragraph:

    A red circle.\n\n![image](data:image/png;base64,iVBORw0KGgo...)

Streaming sends the same string in pieces (text as it is decoded, an image whole once it is
drawn); joined, the pieces equal the non-streamed content.
"""

from __future__ import annotations

import base64
import time
import uuid

from PIL import Image

from ..data.images import image_to_data_uri, image_to_png_bytes
from ..inference.generate import Output


class ContentWriter:
    """Builds the answer's content string from the model's parts; `add` returns each new piece."""

    def __init__(self) -> None:
        self.content = ""
        self._after_image = False

    def add(self, kind: str, value: object) -> str:
        if kind == "text":
            piece = str(value)
            if piece and self._after_image:
                piece = "\n\n" + piece
                self._after_image = False
        else:
            separator = "\n\n" if self.content else ""
            piece = f"{separator}![image]({image_to_data_uri(value)})"
            self._after_image = True
        self.content += piece
        return piece


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(output: Output, max_tokens: tuple[int, int | None] = (0, None)) -> dict:
    """OpenAI's usage; when the request's max_tokens was clamped, also what it asked for and got."""
    used, asked = max_tokens
    clamped = {"max_tokens_requested": asked, "max_tokens_used": used} if asked and asked > used else {}
    return {
        "prompt_tokens": output.prompt_tokens,
        "completion_tokens": output.completion_tokens,
        "total_tokens": output.prompt_tokens + output.completion_tokens,
        **clamped,
    }


def chat_completion(output: Output, model: str, max_tokens: tuple[int, int | None] = (0, None)) -> dict:
    writer = ContentWriter()
    for kind, value in output.parts:
        writer.add(kind, value)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": writer.content},
                "finish_reason": output.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(output, max_tokens),
    }


def chat_chunk(
    chunk_id: str,
    model: str,
    created: int,
    delta: dict,
    finish_reason: str | None = None,
    usage_: dict | None = None,
) -> dict:
    """One `chat.completion.chunk`; the usage chunk (stream_options.include_usage) has no choices."""
    chunk = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if usage_ is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def images_response(images: list[Image.Image]) -> dict:
    return {
        "created": int(time.time()),
        "data": [
            {"b64_json": base64.b64encode(image_to_png_bytes(im)).decode("ascii"), "revised_prompt": None}
            for im in images
        ],
    }
