"""Dataset formats real tools use, written and read back.

* `imagefolder`: PNGs beside `metadata.jsonl` (`file_name`, `text`, ...) in a split-named folder
  (`train/`, `val/`, ...), the layout Hugging Face `datasets.load_dataset("imagefolder",
  data_dir=...)` reads; a `metadata.jsonl` at the top level is read too.
* `llava`: `llava.json`, a list of `{id, image, conversations: [{from, value}]}` with images under
  `images/`. `image` may be a list when a conversation holds several images (edits, text-to-image
  answers); `<image>` marks each one's place, in order, in human *and* gpt turns.
* `wds`: WebDataset tar shards (`shards/{split}-000000.tar`, ...), one sample per key with
  `png`, `json` and `txt` members, written with the `webdataset` package.

Writing is atomic: rows go to a temporary sibling folder renamed into place when complete, so a
crash or a full disk never leaves a half-written dataset behind. Reading goes through
`read_examples`, which every training stage uses, whatever the format.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .images import load_image

FORMATS = ("imagefolder", "llava", "wds")
LLAVA_FILE = "llava.json"
METADATA_FILE = "metadata.jsonl"


class DatasetError(ValueError):
    """A dataset folder that cannot be written or read; the message names the place and the fix."""


@dataclass
class Example:
    """One training example in any format: images in order, and the text around them.

    `caption` is set for image-text pairs; `conversations` ([{"from", "value"}] with `<image>`
    placeholders, LLaVA style) for chat data. Images load lazily through `load_images()`.
    """

    id: str
    image_paths: list[str] = field(default_factory=list)
    caption: str | None = None
    conversations: list[dict] | None = None
    meta: dict = field(default_factory=dict)
    _images: list[Image.Image] | None = None

    def load_images(self, max_pixels: int | None = None) -> list[Image.Image]:
        if self._images is None:
            kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
            self._images = [load_image(p, **kwargs) for p in self.image_paths]
        return self._images


# --- writing -----------------------------------------------------------------------------------


def prepare_output(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that `out` can be created; returns a fresh temporary sibling folder to write into."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    parent = out.parent.resolve()
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as error:
        raise DatasetError(
            f"cannot write into {parent}: {error.strerror or error}; choose a writable --out"
        ) from None
    return staging


def commit_output(staging: Path, out: str | os.PathLike) -> Path:
    """Move a finished staging folder into place (replacing an old `out` only now)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", compress_level=1)


# --- reading -----------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    """Which of FORMATS the folder (or shard pattern) holds."""
    p = Path(path)
    text = str(path)
    if text.endswith(".tar") or "{" in text or "*" in text:
        return "wds"
    if not p.exists():
        raise DatasetError(f"dataset {p} does not exist; make one with `vlgpt world --out {p}`")
    if p.is_file() and p.suffix == ".json":
        return "llava"
    if (p / LLAVA_FILE).exists():
        return "llava"
    if _metadata_files(p):
        return "imagefolder"
    if (p / "shards").is_dir() or list(p.glob("*.tar")):
        return "wds"
    raise DatasetError(
        f"{p} holds no dataset vlgpt can read: expected {METADATA_FILE} (imagefolder), {LLAVA_FILE} "
        "(LLaVA) or .tar shards (WebDataset)"
    )


def read_examples(path: str | os.PathLike) -> Iterator[Example]:
    """Examples of a dataset in any of FORMATS, in file order."""
    kind = detect_format(path)
    return {"imagefolder": _read_imagefolder, "llava": _read_llava, "wds": _read_wds}[kind](path)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise DatasetError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def _metadata_files(root: Path) -> list[Path]:
    if (root / METADATA_FILE).exists():
        return [root / METADATA_FILE]
    return sorted(root.glob(f"*/{METADATA_FILE}"))


def _read_imagefolder(path) -> Iterator[Example]:
    for metadata in _metadata_files(Path(path)):
        yield from _read_metadata(metadata)


def _read_metadata(metadata: Path) -> Iterator[Example]:
    root = metadata.parent
    for number, row in _read_jsonl(metadata):
        if "file_name" not in row:
            raise DatasetError(f"{root / METADATA_FILE}:{number}: row has no file_name")
        caption = row.get("text", row.get("caption"))
        meta = {k: v for k, v in row.items() if k not in ("file_name", "text", "caption")}
        yield Example(
            id=str(row.get("id", Path(row["file_name"]).stem)),
            image_paths=[str(root / row["file_name"])],
            caption=caption,
            meta=meta,
        )


def _read_llava(path) -> Iterator[Example]:
    p = Path(path)
    file = p if p.is_file() else p / LLAVA_FILE
    root = file.parent
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{file}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(entries, list):
        raise DatasetError(f"{file}: expected a JSON list of conversations")
    for number, entry in enumerate(entries):
        images = entry.get("image") or []
        images = [images] if isinstance(images, str) else list(images)
        conversations = entry.get("conversations")
        if not isinstance(conversations, list):
            raise DatasetError(f"{file}: entry {number} ({entry.get('id')}) has no conversations list")
        meta = {k: v for k, v in entry.items() if k not in ("id", "image", "conversations")}
        yield Example(
            id=str(entry.get("id", number)),
            image_paths=[str(root / i) for i in images],
            conversations=conversations,
            caption=meta.pop("caption", None),
            meta=meta,
        )


def shard_urls(path) -> list[str]:
    """Shard paths of a folder, a glob, a single .tar or a brace-expanded pattern."""
    import braceexpand

    text = str(path)
    if Path(text).is_dir():
        found = sorted(
            glob.glob(os.path.join(text, "shards", "*.tar")) or glob.glob(os.path.join(text, "*.tar"))
        )
    elif "{" in text:
        found = list(braceexpand.braceexpand(text))
    else:
        found = sorted(glob.glob(text))
    if not found:
        raise DatasetError(f"no .tar shards found at {text}")
    missing = [u for u in found if not Path(u).exists()]
    if missing:
        raise DatasetError(f"shard {missing[0]} does not exist ({len(missing)} of {len(found)} missing)")
    return found


def _read_wds(path) -> Iterator[Example]:
    import webdataset as wds

    dataset = wds.WebDataset(shard_urls(path), shardshuffle=False, empty_check=False)
    for sample in dataset:
        key = sample["__key__"]
        meta = json.loads(sample["json"]) if "json" in sample else {}
        caption = sample["txt"].decode("utf-8") if "txt" in sample else meta.get("caption")
        blobs = [sample[k] for k in ("png", "jpg", "jpeg", "webp") if k in sample]
        if not blobs:
            raise DatasetError(
                f"{sample.get('__url__', path)}: sample {key} has no image member (png/jpg/webp)"
            )
        example = Example(id=key, caption=caption, meta=meta, conversations=meta.get("conversations"))
        example._images = [load_image(blobs[0], label=f"{sample.get('__url__', path)}:{key}")]
        yield example


def image_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
