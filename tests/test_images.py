"""Tests for vlgpt.data.images: every fixture is built here, in tmp_path or memory."""

from __future__ import annotations

import base64
import io
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from vlgpt.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageTooLarge,
    InvalidDataURI,
    UnreadableImage,
    image_to_data_uri,
    image_to_png_bytes,
    load_image,
    load_image_from_data_uri,
)

# --------------------------------------------------------------------------- helpers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _header_only_png(width: int, height: int) -> bytes:
    """A tiny PNG that *declares* width x height RGB but carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _load_error(source: object, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    return info.value


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- size cap


def test_bomb_png_declaring_20000x20000_is_refused_with_flat_memory(tmp_path: Path) -> None:
    data = _header_only_png(20000, 20000)
    assert len(data) < 300
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    pillow_cap = Image.MAX_IMAGE_PIXELS
    before = _peak_rss_mb()
    for source in (path, data):
        with pytest.raises(ImageTooLarge) as info:
            load_image(source)
        message = str(info.value)
        assert "400.0 Mpx exceeds the 16.0 Mpx cap" in message
        assert "--max-pixels" in message
    assert str(path) in str(_load_error(path))
    assert _peak_rss_mb() - before < 50
    assert Image.MAX_IMAGE_PIXELS == pillow_cap  # Pillow's global is left alone


def test_own_cap_is_checked_before_decoding_below_pillows_limit() -> None:
    # 25 Mpx is under Pillow's own bomb threshold (~89 Mpx): only our cap stops it.
    before = _peak_rss_mb()
    error = _load_error(_header_only_png(5000, 5000), label="upload.png")
    assert isinstance(error, ImageTooLarge)
    assert str(error) == (
        "upload.png: 5000x5000 = 25.0 Mpx exceeds the 16.0 Mpx cap (raise --max-pixels to allow it)"
    )
    assert _peak_rss_mb() - before < 50
    assert DEFAULT_MAX_PIXELS == 16_000_000


def test_max_pixels_is_respected_and_validated() -> None:
    png = _encode(Image.new("RGB", (20, 10), (1, 2, 3)), "PNG")
    error = _load_error(png, max_pixels=199)
    assert isinstance(error, ImageTooLarge)
    assert "<bytes>: 20x10 = 200 px exceeds the 199 px cap" in str(error)
    assert load_image(png, max_pixels=200).size == (20, 10)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(png, max_pixels=0)


# --------------------------------------------------------------------------- broken input


def test_truncated_jpeg_and_png_raise(tmp_path: Path) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for fmt in ("JPEG", "PNG"):
        data = _encode(_noise(), fmt)
        path = tmp_path / f"cut.{fmt.lower()}"
        path.write_bytes(data[: len(data) // 2])
        error = _load_error(path)
        assert isinstance(error, UnreadableImage)
        assert str(path) in str(error)
        assert "truncated or corrupt" in str(error)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_zero_bytes(tmp_path: Path) -> None:
    assert "<bytes>: input is empty (0 bytes)" in str(_load_error(b""))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert str(_load_error(empty)).startswith(f"{empty}: file is empty (0 bytes)")


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, I am not a picture\n" * 10)
    error = _load_error(path)
    assert isinstance(error, UnreadableImage)
    assert str(error).startswith(f"{path}: not a recognised image")
    assert "PNG" in str(error)


def test_directory_and_missing_path(tmp_path: Path) -> None:
    error = _load_error(tmp_path)
    assert str(error).startswith(f"{tmp_path}: is a directory")
    missing = tmp_path / "nope.jpg"
    error = _load_error(str(missing))
    assert str(error) == f"{missing}: no such file; check the path"
    assert isinstance(error, ValueError)


def test_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def test_loaded_image_is_detached_and_file_closed(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (8, 4), (10, 20, 30)).save(path)
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    img = load_image(path)
    fds_after = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert fds_after <= fds_before
    assert getattr(img, "fp", None) is None
    assert (img.mode, img.size, img.getpixel((3, 2))) == ("RGB", (8, 4), (10, 20, 30))


# --------------------------------------------------------------------------- modes


def test_animated_gif_gives_first_frame_rgb(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (12, 12), c) for c in colours]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((6, 6)) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb() -> None:
    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    img = load_image(_encode(red, "JPEG", quality=95))
    assert img.mode == "RGB"
    assert _close(img.getpixel((8, 8)), (255, 0, 0), tol=20)


def test_rgba_transparent_pixels_become_white() -> None:
    im = Image.new("RGBA", (3, 1), (255, 0, 0, 0))
    im.putpixel((1, 0), (0, 0, 255, 255))
    im.putpixel((2, 0), (0, 0, 0, 128))
    img = load_image(_encode(im, "PNG"))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (0, 0, 255)
    assert _close(img.getpixel((2, 0)), (127, 127, 127), tol=2)


def test_la_image_alpha_is_composited() -> None:
    im = Image.new("LA", (2, 1), (0, 0))
    im.putpixel((1, 0), (40, 255))
    img = load_image(im)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (40, 40, 40)


def test_palette_with_transparency() -> None:
    im = Image.new("P", (2, 1), 0)
    im.putpalette([0, 0, 255, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 0), 1)
    img = load_image(_encode(im, "PNG", transparency=0))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)  # transparent blue -> white
    assert img.getpixel((1, 0)) == (255, 0, 0)


def test_16bit_grayscale_png_is_scaled_not_clipped() -> None:
    im = Image.fromarray(np.array([[65535, 32768, 0]], dtype=np.uint16))
    data = _encode(im, "PNG")
    assert data[24:26] == b"\x10\x00"  # IHDR: bit depth 16, greyscale
    img = load_image(data)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert abs(img.getpixel((1, 0))[0] - 128) <= 1
    assert img.getpixel((2, 0)) == (0, 0, 0)


def test_mode_i_f_1_and_l_are_converted() -> None:
    as_i = Image.fromarray(np.array([[65535, 32768]], dtype=np.int32))
    assert as_i.mode == "I"
    assert [load_image(as_i).getpixel((x, 0))[0] for x in (0, 1)] == [255, 128]
    as_f = Image.fromarray(np.array([[1.0, 0.5, 0.0]], dtype=np.float32))
    assert as_f.mode == "F"
    assert [load_image(as_f).getpixel((x, 0))[0] for x in (0, 1, 2)] == [255, 128, 0]
    one = Image.new("1", (2, 1), 0)
    one.putpixel((1, 0), 1)
    assert [load_image(one).getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 0), (255, 255, 255)]
    assert load_image(Image.new("L", (1, 1), 77)).getpixel((0, 0)) == (77, 77, 77)


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 20))  # red left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)
    assert _close(img.getpixel((10, 3)), (255, 0, 0), tol=40)  # left edge is now the top
    assert _close(img.getpixel((10, 35)), (0, 0, 255), tol=40)


def test_given_image_is_not_modified() -> None:
    src = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    out = load_image(src)
    assert out is not src and src.mode == "RGBA" and out.mode == "RGB"


# --------------------------------------------------------------------------- data URIs


def test_data_uri_round_trip() -> None:
    im = Image.new("RGB", (5, 3), (12, 34, 56))
    uri = image_to_data_uri(im)
    assert uri.startswith("data:image/png;base64,")
    img = load_image_from_data_uri(uri)
    assert (img.size, img.getpixel((4, 2))) == ((5, 3), (12, 34, 56))
    assert image_to_png_bytes(im).startswith(b"\x89PNG\r\n\x1a\n")
    wrapped = uri[:30] + "\n  " + uri[30:]  # line-wrapped base64 is tolerated
    assert load_image_from_data_uri(wrapped).getpixel((0, 0)) == (12, 34, 56)


def test_data_uri_refusals() -> None:
    png = base64.b64encode(_encode(Image.new("RGB", (2, 2)), "PNG")).decode()
    with pytest.raises(InvalidDataURI, match="'text/html' is not allowed"):
        load_image_from_data_uri(f"data:text/html;base64,{png}")
    with pytest.raises(InvalidDataURI, match="not valid base64"):
        load_image_from_data_uri("data:image/png;base64,@@not*base64@@")
    with pytest.raises(InvalidDataURI, match="malformed"):
        load_image_from_data_uri("image/png;base64,AAAA")
    with pytest.raises(InvalidDataURI, match="not base64-encoded"):
        load_image_from_data_uri(f"data:image/png,{png}")


def test_data_uri_payload_must_really_be_an_allowed_image() -> None:
    html = base64.b64encode(b"<html><script>alert(1)</script></html>").decode()
    with pytest.raises(UnreadableImage, match="<data URI>: not a recognised image"):
        load_image_from_data_uri(f"data:image/png;base64,{html}")
    bmp = base64.b64encode(_encode(Image.new("RGB", (2, 2)), "BMP")).decode()
    with pytest.raises(UnreadableImage, match="not a recognised image"):
        load_image_from_data_uri(f"data:image/png;base64,{bmp}")  # BMP is not allowed
    bomb = base64.b64encode(_header_only_png(20000, 20000)).decode()
    with pytest.raises(ImageTooLarge):
        load_image_from_data_uri(f"data:image/png;base64,{bomb}")


def test_data_uri_passed_as_path_gets_a_hint() -> None:
    with pytest.raises(UnreadableImage, match="load_image_from_data_uri"):
        load_image("data:image/png;base64,AAAA")
