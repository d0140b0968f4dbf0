"""The one safe way into vlgpt for every image a user hands over.

Images arrive from files, raw bytes and (for the server) data URIs. Each one is
untrusted, and Pillow on its own is not a safe default for that:

* **Decompression bombs.** A few hundred bytes of PNG can declare a
  20000x20000 canvas; decoding it would allocate over a gigabyte. We read the
  header only, compare ``width * height`` with our own ``max_pixels`` cap and
  refuse *before* decoding. Pillow's global ``Image.MAX_IMAGE_PIXELS`` is
  neither relied on nor modified; when Pillow's own check fires first, its
  ``DecompressionBombError`` / ``DecompressionBombWarning`` become
  :class:`ImageTooLarge`. Pillow's hard limit (2 x ``MAX_IMAGE_PIXELS``) still
  applies as a backstop even if ``max_pixels`` is raised above it.
* **Broken input.** Empty input, non-image bytes, directories, missing files
  and truncated files raise :class:`ImageError` with a message naming the
  source, the problem and what to do, never a traceback from deep inside
  Pillow. Truncated files fail loudly because ``ImageFile.LOAD_TRUNCATED_IMAGES``
  is left at its default (False); this module never changes it. Setting it
  True elsewhere in the process would let half-decoded images through.
* **Odd modes.** The model wants 8-bit RGB. Transparency (RGBA, LA, PA, P or L
  with a transparent colour) is composited onto white; CMYK is converted;
  16-bit grayscale is scaled (65535 -> 255), not clipped; "1", "L", "F" and the
  rest are converted. EXIF orientation is applied, so phone photos are upright.
* **Formats.** Only the common raster formats in :data:`SUPPORTED_FORMATS` are
  opened; exotic Pillow plugins (EPS runs Ghostscript, for one) are not.
  Animated images (GIF, APNG, WebP) yield their **first frame**.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterable, Sequence
from typing import IO, Final

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_ALLOWED_MIME",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "ImageError",
    "ImageSource",
    "ImageTooLarge",
    "InvalidDataURI",
    "UnreadableImage",
    "image_to_data_uri",
    "image_to_png_bytes",
    "load_image",
    "load_image_from_data_uri",
]

DEFAULT_MAX_PIXELS: Final = 16_000_000
"""Largest ``width * height`` accepted by default (16 Mpx, about 48 MB as RGB)."""

SUPPORTED_FORMATS: Final = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF", "PPM", "AVIF")
"""Pillow formats :func:`load_image` will open (those this Pillow build lacks are skipped)."""

DEFAULT_ALLOWED_MIME: Final = ("image/png", "image/jpeg", "image/webp", "image/gif")

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image

# Exceptions Pillow is known to raise on hostile or damaged input.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
)
_BOMB_ERRORS: Final = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_INT_MODES: Final = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_PNG_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_DATA_URI: Final = re.compile(
    r"data:(?P<mime>[^,;]*)(?P<params>(?:;[^,;]*)*),(?P<payload>.*)", re.DOTALL | re.IGNORECASE
)
_WHITE: Final = (255, 255, 255, 255)


class ImageError(ValueError):
    """An image could not be accepted; the message says which, why and what to do."""


class ImageTooLarge(ImageError):
    """The image has more pixels than the ``max_pixels`` cap (or Pillow's hard limit)."""


class UnreadableImage(ImageError):
    """The source is missing, empty, not an image, truncated or corrupt."""


class InvalidDataURI(ImageError):
    """A data URI is malformed, has a disallowed MIME type or bad base64."""


# --------------------------------------------------------------------------- public API


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    label: str | None = None,
) -> Image.Image:
    """Load ``source`` as a fully decoded 8-bit RGB image, safely.

    ``source`` is a file path, the encoded bytes of an image, or an already
    opened ``PIL.Image.Image`` (which is not modified or closed). ``label``
    names the source in error messages (default: the path, ``"<bytes>"`` or
    ``"<image>"``).

    The pixel count is checked against ``max_pixels`` from the header alone,
    before any pixel data is decoded. The result is a new, fully loaded image
    with no open file behind it: EXIF orientation applied, transparency
    composited onto white, every mode converted to RGB. Animated images (GIF,
    APNG, WebP) give their first frame. An unreadable EXIF block is ignored
    with a warning (the image is kept as stored).

    Raises :class:`ImageTooLarge` or :class:`UnreadableImage` (both
    :class:`ImageError`, a ``ValueError``).
    """
    return _load(source, max_pixels=max_pixels, label=label, formats=SUPPORTED_FORMATS)


def load_image_from_data_uri(
    uri: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allowed_mime: Sequence[str] = DEFAULT_ALLOWED_MIME,
    label: str | None = None,
) -> Image.Image:
    """Load a ``data:<mime>;base64,<payload>`` URI like :func:`load_image`.

    The declared MIME type must be in ``allowed_mime``, and the decoded bytes
    must themselves be an image of one of those types (the declared type is
    not trusted; a PNG labelled image/jpeg is accepted, HTML labelled
    image/png is not). Whitespace inside the base64 payload is ignored.

    Raises :class:`InvalidDataURI` for a malformed URI, a disallowed type or
    bad base64, then whatever :func:`load_image` raises.
    """
    name = label or "<data URI>"
    mime, payload = _parse_data_uri(uri, name)
    allowed = tuple(sorted({m.strip().lower() for m in allowed_mime}))
    if mime not in allowed:
        raise InvalidDataURI(
            f"{name}: MIME type {mime or '(none)'!r} is not allowed; send one of {', '.join(allowed)}"
        )
    data = _decode_base64(payload, name)
    return _load(data, max_pixels=max_pixels, label=name, formats=_formats_for_mime(allowed))


def image_to_png_bytes(img: Image.Image) -> bytes:
    """Encode ``img`` as PNG (modes PNG cannot store are converted to RGB first)."""
    if img.mode not in _PNG_MODES:
        img = _to_rgb(img)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def image_to_data_uri(img: Image.Image) -> str:
    """Encode ``img`` as a ``data:image/png;base64,...`` URI."""
    payload = base64.b64encode(image_to_png_bytes(img)).decode("ascii")
    return f"data:image/png;base64,{payload}"


# --------------------------------------------------------------------------- loading


def to_array(image: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]: centre-cropped to a square, resized with a good filter."""
    if image.size != (size, size):
        w, h = image.size
        side = min(w, h)
        image = image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def pixels_from(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] arrays -> float [B, 3, H, W] in 0..1."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """float [3, H, W] in 0..1 -> an RGB image."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def _load(source: ImageSource, *, max_pixels: int, label: str | None, formats: Sequence[str]) -> Image.Image:
    _check_max_pixels(max_pixels)
    if isinstance(source, Image.Image):
        return _finish(source, label or "<image>", max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = label or "<bytes>"
        if len(source) == 0:
            raise UnreadableImage(f"{name}: input is empty (0 bytes); pass the image's encoded bytes")
        with io.BytesIO(source) as fp:
            return _decode(fp, name, max_pixels, formats)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = label or os.fsdecode(path)
        _refuse_data_uri_as_path(path, label)
        with _open_file(path, name) as fp:
            return _decode(fp, name, max_pixels, formats)
    raise TypeError(f"load_image() takes a path, bytes or PIL.Image.Image, not {type(source).__name__}")


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")


def _refuse_data_uri_as_path(path: str | bytes, label: str | None) -> None:
    if isinstance(path, str) and path.startswith("data:") and not os.path.exists(path):
        raise UnreadableImage(
            f"{label or '<data URI>'}: got a data URI where a file path was expected; "
            "use load_image_from_data_uri() for data URIs"
        )


def _open_file(path: str | bytes, name: str) -> IO[bytes]:
    """Open ``path`` for reading after checking it is a non-empty regular file."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableImage(f"{name}: no such file; check the path") from None
    except (OSError, ValueError) as exc:
        raise UnreadableImage(f"{name}: cannot access the file ({exc}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableImage(f"{name}: is a directory, not an image file; pass an image file's path")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableImage(f"{name}: not a regular file; pass an image file's path")
    if info.st_size == 0:
        raise UnreadableImage(f"{name}: file is empty (0 bytes); re-download or re-export it")
    try:
        return open(path, "rb")
    except OSError as exc:
        reason = exc.strerror or exc
        raise UnreadableImage(f"{name}: cannot open the file ({reason}); check its permissions") from None


def _decode(fp: IO[bytes], name: str, max_pixels: int, formats: Sequence[str]) -> Image.Image:
    im = _open_header(fp, name, max_pixels, formats)
    try:
        return _finish(im, name, max_pixels)
    finally:
        im.close()


def _open_header(fp: IO[bytes], name: str, max_pixels: int, formats: Sequence[str]) -> Image.Image:
    """``Image.open``: identify the format and read the header, decode nothing."""
    available = _available_formats(formats)
    try:
        return Image.open(fp, formats=available)
    except _BOMB_ERRORS as exc:
        raise _bomb_error(name, exc, max_pixels) from None
    except UnidentifiedImageError:
        raise UnreadableImage(
            f"{name}: not a recognised image (expected {', '.join(available)}); "
            "check that this is really an image file"
        ) from None
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(
            f"{name}: corrupt image header ({exc}); re-download or re-export the image"
        ) from exc


def _available_formats(formats: Iterable[str]) -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in formats if f in Image.OPEN)


def _finish(im: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Check the size, decode the pixels, orient and convert to RGB."""
    _check_size(im.size, name, max_pixels)
    try:
        im.load()
        return _to_rgb(_apply_orientation(im, name))
    except ImageError:
        raise
    except _BOMB_ERRORS as exc:
        raise _bomb_error(name, exc, max_pixels) from None
    except _DECODE_ERRORS as exc:
        kind = im.format or "image"
        raise UnreadableImage(
            f"{name}: cannot decode this {kind} ({exc}); the file is truncated or corrupt, "
            "re-download or re-export it"
        ) from exc


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"{name}: image has no pixels ({width}x{height}); re-export it")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLarge(
            f"{name}: {width}x{height} = {_fmt_pixels(pixels)} exceeds the "
            f"{_fmt_pixels(max_pixels)} cap (raise --max-pixels to allow it)"
        )


def _bomb_error(name: str, exc: Exception | Warning, max_pixels: int) -> ImageTooLarge:
    """Turn Pillow's decompression-bomb error/warning into :class:`ImageTooLarge`."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(found.group(1)) if found else None
    if pixels is not None and pixels > max_pixels:
        return ImageTooLarge(
            f"{name}: {_fmt_pixels(pixels)} exceeds the {_fmt_pixels(max_pixels)} cap "
            "(raise --max-pixels to allow it)"
        )
    return ImageTooLarge(
        f"{name}: Pillow refused it as a possible decompression bomb ({exc}); "
        "vlgpt does not lift Pillow's own limit, so downscale the image first"
    )


def _fmt_pixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} Mpx" if pixels >= 100_000 else f"{pixels} px"


def _apply_orientation(im: Image.Image, name: str) -> Image.Image:
    """Apply EXIF orientation; always returns a new image."""
    try:
        oriented = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as exc:
        warnings.warn(f"{name}: unreadable EXIF data ignored ({exc})", stacklevel=2)
        return im.copy()
    return oriented if oriented is not None and oriented is not im else im.copy()


# --------------------------------------------------------------------------- modes


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (may return ``im`` itself if already RGB)."""
    if im.mode in _INT_MODES or im.mode == "F":
        return _high_depth_to_rgb(im)
    if _has_alpha(im):
        return _flatten_on_white(im)
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise UnreadableImage(
            f"{im.mode} images cannot be converted to RGB ({exc}); re-export as RGB"
        ) from exc


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def _flatten_on_white(im: Image.Image) -> Image.Image:
    if im.mode == "La":  # premultiplied; Pillow only converts it to "LA"
        im = im.convert("LA")
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit, scaled rather than clipped.

    "I;16*" is divided by 257 (65535 -> 255, 32768 -> 128). "I" is treated the
    same when its values fit 0..65535 (how Pillow stores 16-bit data), else
    min-max normalised. "F" in 0..1 is multiplied by 255, in 0..255 kept,
    otherwise min-max normalised; NaN/inf become 0. A transparent grey value
    (PNG tRNS) becomes white.
    """
    values = np.asarray(im).astype(np.float32)
    transparent = _transparent_mask(im, values)
    values[~np.isfinite(values)] = 0.0
    gray = _scale_to_uint8(values, 65535.0 if im.mode in _INT_MODES else 1.0)
    if transparent is not None:
        gray[transparent] = 255
    return Image.fromarray(gray).convert("RGB")


def _transparent_mask(im: Image.Image, values: np.ndarray) -> np.ndarray | None:
    key = im.info.get("transparency")
    return values == key if isinstance(key, (int, float)) else None


def _scale_to_uint8(values: np.ndarray, natural_max: float) -> np.ndarray:
    """Map ``values`` onto 0..255: by ``natural_max`` if they fit 0..natural_max."""
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0 and high <= natural_max:
        scaled = values * (255.0 / natural_max)
    elif natural_max == 1.0 and low >= 0 and high <= 255:
        scaled = values
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- data URIs


def _parse_data_uri(uri: str, name: str) -> tuple[str, str]:
    """Split ``data:<mime>[;params];base64,<payload>`` into (mime, payload)."""
    if not isinstance(uri, str):
        raise InvalidDataURI(f"{name}: expected a data URI string, got {type(uri).__name__}")
    match = _DATA_URI.fullmatch(uri.strip())
    if match is None:
        raise InvalidDataURI(
            f"{name}: malformed data URI ({_preview(uri)}); expected 'data:<mime>;base64,<payload>'"
        )
    params = [p.strip().lower() for p in match["params"].split(";")[1:]]
    if "base64" not in params:
        raise InvalidDataURI(
            f"{name}: data URI is not base64-encoded ({_preview(uri)}); "
            "expected 'data:<mime>;base64,<payload>'"
        )
    return match["mime"].strip().lower(), match["payload"]


def _decode_base64(payload: str, name: str) -> bytes:
    compact = "".join(payload.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidDataURI(
            f"{name}: payload is not valid base64 ({exc}); encode the image with standard base64"
        ) from None


def _formats_for_mime(allowed_mime: Iterable[str]) -> tuple[str, ...]:
    """Pillow format names whose MIME type is allowed (JPEG also admits MPO)."""
    Image.init()
    allowed = set(allowed_mime)
    formats = [fmt for fmt, mime in Image.MIME.items() if mime in allowed]
    if "JPEG" in formats:
        formats.append("MPO")
    return tuple(dict.fromkeys(formats))


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
