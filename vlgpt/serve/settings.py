"""What `vlgpt serve` may do, as one frozen dataclass: limits, auth, bind address.

Every field has a help text that becomes the CLI flag's `--help`. The defaults are the safe ones:
loopback only, no remote image fetching, no CORS, bounded bodies, images, prompts and queue.
Importing this module is cheap (no FastAPI), so the CLI can build its parser from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from dataclasses import dataclass

from ..core.config import ConfigError, f
from ..core.overrides import add_config_arguments

API_KEY_ENV = "VLGPT_API_KEY"


class ServeSettingsError(ConfigError):
    """A setting that is wrong or unsafe; the message says which and what to do."""


@dataclass(frozen=True)
class ServeSettings:
    host: str = f("127.0.0.1", "address to bind; anything but loopback needs an API key")
    port: int = f(8000, "TCP port to listen on")
    api_key: str | None = f(
        None,
        f"require 'Authorization: Bearer KEY' on every API route (default: ${API_KEY_ENV}); "
        "/health and the static UI page stay open",
    )
    model_name: str = f("vlgpt", "model id listed by /v1/models and expected in requests")
    max_body_mb: float = f(16.0, "largest request body in MB; a bigger one gets 413 before it is read")
    max_pixels: int = f(4_000_000, "largest image (width x height) accepted, checked before decoding")
    max_images: int = f(4, "most input images in one chat request")
    max_n: int = f(4, "most images one images request may ask for (n)")
    max_prompt_chars: int = f(4000, "most characters of text in one request")
    max_tokens: int = f(256, "most tokens an answer may take; a request asking for more is clamped to it")
    queue_size: int = f(
        64,
        "requests that may wait while one runs (lmms-eval sends 64 at once); more get 429 with Retry-After",
    )
    max_batch: int = f(
        16,
        "greedy, non-streamed chat requests waiting together are decoded as one batch of up to this "
        "many (1: one at a time)",
    )
    images_first: bool = f(
        True,
        "move a user turn's images before its text, the order the model was trained on "
        "(lmms-eval and many clients send the question first)",
    )
    timeout_s: float = f(60.0, "seconds a request may wait and run before it is cancelled (504)")
    allow_remote_images: bool = f(False, "fetch http(s) image URLs (off: images must come as data: URIs)")
    cors_origins: tuple[str, ...] = f(
        (), "an origin allowed by CORS (repeatable); none given: no CORS headers"
    )

    def __post_init__(self) -> None:
        for name in (
            "max_body_mb",
            "max_pixels",
            "max_images",
            "max_n",
            "max_prompt_chars",
            "max_tokens",
            "max_batch",
            "timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ServeSettingsError(f"{name} must be positive, got {getattr(self, name)}")
        if self.queue_size < 0:
            raise ServeSettingsError(f"queue_size must be >= 0, got {self.queue_size}")
        if not 0 <= self.port <= 65535:
            raise ServeSettingsError(f"port must be in 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ServeSettingsError("the API key is empty; pass a real secret or leave --api-key out")
        if "*" in self.cors_origins:
            raise ServeSettingsError(
                "--cors-origin '*' would let any web page use this server; name the origins"
            )
        if not is_loopback(self.host) and not self.api_key:
            raise ServeSettingsError(
                f"refusing to bind {self.host} without an API key: anyone who can reach this machine "
                f"could use the model. Pass --api-key KEY (or set {API_KEY_ENV}), or bind 127.0.0.1"
            )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; names that need resolving count as public."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- CLI flags

_FLAG_NAMES = {"cors_origins": "--cors-origin", "timeout_s": "--timeout", "max_body_mb": "--max-body-mb"}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ServeSettings field, with the field's help text and default."""
    add_config_arguments(parser, ServeSettings, defaults=True, flag_names=_FLAG_NAMES)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(ServeSettings)}
    values["cors_origins"] = tuple(values["cors_origins"])
    if values["api_key"] is None:
        values["api_key"] = os.environ.get(API_KEY_ENV) or None
    return ServeSettings(**values)
