"""`vlgpt data check DIR`: find every problem in a dataset before a training run trips on it.

The readers in `formats.py` stop at the first structural error, as a training run must. A check
goes on: it walks the whole dataset, in any of the three formats, and reports each problem with its
place (file and line, entry number, shard and key):

* a metadata line that is not JSON, or lacks `file_name`;
* an image that is missing, unreadable (truncated, not an image) or over the pixel cap;
* an empty caption where a caption is the whole example;
* a conversation that is not a list of `{from, value}` turns, has an unknown speaker, has no
  assistant turn, or whose `<image>` placeholders do not match its images.

A problem never stops the walk; the report lists them all, and the command exits 1 when there is
any (0 when the dataset is clean).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .formats import LLAVA_FILE, DatasetError, _metadata_files, detect_format, shard_urls
from .images import DEFAULT_MAX_PIXELS, ImageError, load_image

IMAGE_MEMBERS = ("png", "jpg", "jpeg", "webp")
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Problem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Report:
    path: str
    format: str
    examples: int = 0
    images: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str) -> None:
        self.problems.append(Problem(where, what))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "examples": self.examples,
            "images": self.images,
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
        }


def conversation_problems(conversations, n_images: int) -> list[str]:
    """What is wrong with one LLaVA conversation holding `n_images` images (empty when nothing)."""
    if not isinstance(conversations, list) or not conversations:
        return ["`conversations` must be a non-empty list of {from, value} turns"]
    problems, placeholders, assistant = [], 0, False
    for number, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            problems.append(f"turn {number} is not a {{from, value}} object with a text value")
            continue
        speaker = SPEAKERS.get(turn.get("from"))
        if speaker is None:
            problems.append(f"turn {number} has speaker {turn.get('from')!r}; use human or gpt")
        assistant |= speaker == "assistant"
        placeholders += turn["value"].count("<image>")
    if not assistant:
        problems.append("the conversation has no assistant (gpt) turn, so nothing would be trained")
    if placeholders != n_images:
        problems.append(
            f"{placeholders} <image> placeholder(s) for {n_images} image(s); each image needs one, in order"
        )
    return problems


def check_dataset(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Report:
    """Walk the dataset at `path` and collect every problem (raises DatasetError only when `path`
    holds no dataset at all)."""
    kind = detect_format(path)
    report = Report(str(path), kind)
    {"imagefolder": _check_imagefolder, "llava": _check_llava, "wds": _check_wds}[kind](
        Path(path), report, max_pixels
    )
    if report.examples == 0 and report.ok:
        report.add(str(path), "the dataset holds no examples")
    return report


def _check_image(source, where: str, report: Report, max_pixels: int) -> None:
    report.images += 1
    if isinstance(source, Path) and not source.is_file():
        report.add(where, f"image {source} does not exist")
        return
    try:
        load_image(
            source if not isinstance(source, Path) else str(source), max_pixels=max_pixels, label=where
        )
    except ImageError as error:
        report.add(where, str(error).removeprefix(f"{where}: "))


def _check_imagefolder(root: Path, report: Report, max_pixels: int) -> None:
    for metadata in _metadata_files(root):
        folder = metadata.parent
        with open(metadata, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{metadata}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    report.add(where, f"not valid JSON ({error.msg})")
                    continue
                if not isinstance(row, dict):
                    report.add(where, "a row must be a JSON object")
                    continue
                report.examples += 1
                if not isinstance(row.get("file_name"), str) or not row["file_name"]:
                    report.add(where, "row has no file_name")
                else:
                    _check_image(folder / row["file_name"], where, report, max_pixels)
                caption = row.get("text", row.get("caption"))
                if "conversations" in row:
                    for problem in conversation_problems(row["conversations"], 1):
                        report.add(where, problem)
                elif not isinstance(caption, str) or not caption.strip():
                    report.add(where, "empty caption (`text`)")


def _check_llava(path: Path, report: Report, max_pixels: int) -> None:
    file = path if path.is_file() else path / LLAVA_FILE
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        report.add(str(file), f"not valid JSON ({getattr(error, 'msg', error)})")
        return
    if not isinstance(entries, list):
        report.add(str(file), "expected a JSON list of conversations")
        return
    for number, entry in enumerate(entries):
        where = f"{file} entry {number}"
        if not isinstance(entry, dict):
            report.add(where, "an entry must be a JSON object")
            continue
        report.examples += 1
        if "id" in entry:
            where += f" (id {entry['id']})"
        images = entry.get("image") or []
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            report.add(where, "`image` must be a path or a list of paths")
            images = []
        for image in images:
            _check_image(file.parent / image, where, report, max_pixels)
        for problem in conversation_problems(entry.get("conversations"), len(images)):
            report.add(where, problem)


def _check_wds(path: Path, report: Report, max_pixels: int) -> None:
    try:
        urls = shard_urls(path)
    except DatasetError as error:
        report.add(str(path), str(error))
        return
    for url in urls:
        try:
            samples: dict[str, dict[str, bytes]] = {}
            with tarfile.open(url) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.partition(".")
                    samples.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as error:
            report.add(url, f"cannot read the shard ({error}); it is truncated or not a tar file")
            continue
        for key, members in samples.items():
            where = f"{url}:{key}"
            report.examples += 1
            blobs = [members[k] for k in IMAGE_MEMBERS if k in members]
            if not blobs:
                report.add(where, f"no image member ({', '.join(IMAGE_MEMBERS)})")
            else:
                _check_image(blobs[0], where, report, max_pixels)
            try:
                meta = json.loads(members["json"]) if "json" in members else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                report.add(where, "the .json member is not valid JSON")
                meta = {}
            caption = members["txt"].decode("utf-8", "replace") if "txt" in members else meta.get("caption")
            if isinstance(meta, dict) and "conversations" in meta:
                for problem in conversation_problems(meta["conversations"], 1):
                    report.add(where, problem)
            elif not isinstance(caption, str) or not caption.strip():
                report.add(where, "empty caption (no .txt member or json caption)")
