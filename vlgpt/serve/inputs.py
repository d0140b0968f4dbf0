"""From an OpenAI request to what the pipeline takes, with every limit checked on the way.

Images arrive as `data:` URIs (chat), uploaded files (edits) or, only with --allow-remote-images,
http(s) URLs. All of them go through `vlgpt.data.images`: the pixel cap is checked from the header
before anything is decoded, the MIME type of a data URI must be an image type, and the bytes must
really be one. An assistant turn may carry images the server drew earlier, as the markdown
`![image](data:image/png;base64,...)` the server writes; they are read back as images, so a client
can send a conversation back as it received it.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from PIL import Image

from ..data.images import ImageError, ImageTooLarge, load_image, load_image_from_data_uri
from .errors import APIError
from .schemas import ChatCompletionRequest, TextPart
from .settings import ServeSettings

MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((data:[^)\s]+)\)")
REMOTE_TIMEOUT_S = 10.0


def check_model(name: str | None, settings: ServeSettings) -> None:
    if name is not None and name != settings.model_name:
        raise APIError(
            404,
            f"the model {name!r} does not exist; this server serves {settings.model_name!r}",
            param="model",
            code="model_not_found",
        )


def check_prompt_length(chars: int, settings: ServeSettings, param: str) -> None:
    if chars > settings.max_prompt_chars:
        raise APIError(
            400,
            f"the prompt has {chars} characters; this server takes at most "
            f"{settings.max_prompt_chars} (--max-prompt-chars)",
            param=param,
            code="prompt_too_long",
        )


def check_max_tokens(request: ChatCompletionRequest, settings: ServeSettings) -> tuple[int, int | None]:
    """The answer's token budget and what the request asked for: max_completion_tokens, else
    max_tokens, else the server's limit. A request asking for more is clamped to the limit, not
    refused: evaluation harnesses (lmms-eval's OpenAI client sends 1024) ask for more than a small
    model can say, and a refused request became an empty answer there. `usage` reports the clamp."""
    asked = request.max_completion_tokens or request.max_tokens
    if asked is None:
        return settings.max_tokens, None
    return min(asked, settings.max_tokens), asked


def chat_messages(request: ChatCompletionRequest, settings: ServeSettings) -> list[dict]:
    """OpenAI messages -> pipeline messages; image parts keep their URL ({"type": "image_url", "url"})."""
    messages, chars, images = [], 0, 0
    for index, message in enumerate(request.messages):
        content = message.content if message.content is not None else ""
        parts = [TextPart(type="text", text=content)] if isinstance(content, str) else content
        out: list[dict] = []
        for part in parts:
            if isinstance(part, TextPart):
                pieces = (
                    _split_markdown_images(part.text)
                    if message.role == "assistant"
                    else [("text", part.text)]
                )
            else:  # image_url as {"url": ...} (OpenAI) or a plain string (some clients)
                url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
                pieces = [("image_url", url)]
            for kind, value in pieces:
                if kind == "text":
                    chars += len(value)
                    out.append({"type": "text", "text": value})
                else:
                    images += 1
                    out.append({"type": "image_url", "url": value, "param": f"messages[{index}]"})
        role = "system" if message.role == "developer" else message.role
        if role == "user" and settings.images_first:  # the order the model was trained on
            out = [p for p in out if p["type"] == "image_url"] + [p for p in out if p["type"] != "image_url"]
        messages.append({"role": role, "content": out})
    check_prompt_length(chars, settings, "messages")
    if images > settings.max_images:
        raise APIError(
            400,
            f"the request has {images} images; this server takes at most {settings.max_images} "
            "(--max-images)",
            param="messages",
            code="too_many_images",
        )
    return messages


def load_images(messages: list[dict], settings: ServeSettings) -> list[dict]:
    """Decode every image part (blocking: call it in a worker thread, not on the event loop)."""
    loaded = []
    for message in messages:
        content = []
        for part in message["content"]:
            if part["type"] == "image_url":
                part = {"type": "image", "image": load_request_image(part["url"], settings, part["param"])}
            content.append(part)
        loaded.append({"role": message["role"], "content": content})
    return loaded


def load_request_image(url: str, settings: ServeSettings, param: str) -> Image.Image:
    """A data URI, or an http(s) URL when remote images are allowed -> RGB image; APIError 400 otherwise."""
    scheme = urlsplit(url.strip()[:16]).scheme.lower()
    try:
        if scheme == "data":
            return load_image_from_data_uri(url, max_pixels=settings.max_pixels, label=param)
        if scheme in ("http", "https"):
            if not settings.allow_remote_images:
                raise APIError(
                    400,
                    f"{param}: remote image URLs are refused; send the image as a data: URI "
                    "(or start the server with --allow-remote-images)",
                    param=param,
                    code="remote_images_disabled",
                )
            return load_image(_fetch(url, settings, param), max_pixels=settings.max_pixels, label=param)
        raise APIError(
            400,
            f"{param}: unsupported image URL scheme {scheme or '(none)'!r}; send a data: URI",
            param=param,
            code="invalid_image_url",
        )
    except ImageError as error:
        raise image_error(error, param) from None


def load_upload(data: bytes, settings: ServeSettings, param: str) -> Image.Image:
    try:
        return load_image(data, max_pixels=settings.max_pixels, label=param)
    except ImageError as error:
        raise image_error(error, param) from None


def image_error(error: ImageError, param: str) -> APIError:
    return APIError(
        400,
        str(error),
        param=param,
        code="image_too_large" if isinstance(error, ImageTooLarge) else "invalid_image",
    )


def _split_markdown_images(text: str) -> list[tuple[str, str]]:
    """'a ![image](data:...) b' -> [("text", "a"), ("image_url", "data:..."), ("text", "b")]."""
    pieces, last = [], 0
    for match in MARKDOWN_IMAGE.finditer(text):
        pieces.append(("text", text[last : match.start()]))
        pieces.append(("image_url", match.group(1)))
        last = match.end()
    pieces.append(("text", text[last:]))
    return [
        (kind, value.strip() if kind == "text" else value)
        for kind, value in pieces
        if kind == "image_url" or value.strip()
    ]


def _fetch(url: str, settings: ServeSettings, param: str) -> bytes:
    """GET an image with a time and size limit (only with --allow-remote-images)."""
    limit = settings.max_body_bytes
    try:
        with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT_S) as response:
            data = response.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise APIError(
            400, f"{param}: could not fetch the image ({error})", param=param, code="image_fetch_failed"
        ) from None
    if len(data) > limit:
        raise APIError(
            400,
            f"{param}: the remote image is larger than {limit / 2**20:.1f} MB",
            param=param,
            code="image_too_large",
        )
    return data
