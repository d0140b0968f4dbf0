"""Shared by the serving tests: a real uvicorn server on a free loopback port, test images, and
pipeline wrappers that make queue states deterministic."""

from __future__ import annotations

import base64
import io
import socket
import struct
import threading
import time
import zlib
from typing import Self

import uvicorn
from PIL import Image

from vlgpt.serve.app import create_app
from vlgpt.serve.settings import ServeSettings
from vlgpt.world.dataset import ShapesWorld


class ServerThread:
    """`with ServerThread(pipeline, settings) as server:` serves on 127.0.0.1:<free port> in a thread."""

    def __init__(self, pipeline, settings: ServeSettings | None = None):
        self.app = create_app(pipeline, settings or ServeSettings())
        self.worker = self.app.state.worker
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))  # bound before the server starts: no race for the port
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self._socket.close()
        assert not self.thread.is_alive(), "the server did not stop"


def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class GatedPipeline:
    """The real pipeline, but every model call first waits for `gate` (and counts itself)."""

    def __init__(self, pipeline):
        self.inner, self.codec = pipeline, pipeline.codec
        self.gate, self.entered = threading.Event(), threading.Event()
        self.calls = 0
        self.batches: list[int] = []  # the size of each chat_batch call

    def _enter(self) -> None:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"

    def chat(self, messages, **kwargs):
        self._enter()
        return self.inner.chat(messages, **kwargs)

    def chat_batch(self, conversations, **kwargs):
        self._enter()
        self.batches.append(len(conversations))
        return self.inner.chat_batch(conversations, **kwargs)

    def imagine(self, prompt, **kwargs):
        self._enter()
        return self.inner.imagine(prompt, **kwargs)

    def edit(self, image, instruction, **kwargs):
        self._enter()
        return self.inner.edit(image, instruction, **kwargs)


# --------------------------------------------------------------------------- images


def scene(index: int = 0, size: int = 32) -> Image.Image:
    world = ShapesWorld("val", size, size)
    return world.image(world[index])


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header declaring width x height pixels, with a tiny compressed body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def decode_png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image.convert("RGB")
