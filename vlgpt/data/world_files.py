"""`vlgpt world`: write Shapes-world rows in the formats real datasets use."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from ..core.prompts import DESCRIBE, draw_prompt
from ..world.dataset import ShapesWorld
from ..world.render import render
from ..world.scene import Scene
from .formats import (
    FORMATS,
    LLAVA_FILE,
    METADATA_FILE,
    DatasetError,
    commit_output,
    image_bytes,
    prepare_output,
    save_png,
)

SHARD_SIZE = 1000


def llava_conversations(row: dict, image: str, target: str | None) -> list[dict]:
    """The LLaVA-format entries one row yields: describe, VQA (multi-turn), draw and edit."""
    rid = row["id"]
    entries = [
        {
            "id": f"{rid}-caption",
            "image": image,
            "conversations": [
                {"from": "human", "value": f"<image>\n{DESCRIBE}"},
                {"from": "gpt", "value": row["caption"]},
            ],
        },
        {
            "id": f"{rid}-draw",
            "image": image,
            "conversations": [
                {"from": "human", "value": draw_prompt(row["references"][-1])},
                {"from": "gpt", "value": "<image>"},
            ],
        },
    ]
    if row["questions"]:
        turns = []
        for i, qa in enumerate(row["questions"]):
            turns += [
                {"from": "human", "value": ("<image>\n" if i == 0 else "") + qa["question"]},
                {"from": "gpt", "value": qa["answer"]},
            ]
        entries.append({"id": f"{rid}-vqa", "image": image, "conversations": turns})
    if row["edit"] is not None and target is not None:
        entries.append(
            {
                "id": f"{rid}-edit",
                "image": [image, target],
                "conversations": [
                    {"from": "human", "value": f"<image>\n{row['edit']['instruction']}"},
                    {"from": "gpt", "value": "<image>"},
                ],
            }
        )
    return entries


def write_world(
    out: str | os.PathLike,
    n: int,
    split: str = "train",
    fmt: str = "imagefolder",
    seed: int = 0,
    size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
    shard_size: int = SHARD_SIZE,
) -> Path:
    """Write `n` rows of `split` to `out` in format `fmt` (`shard_size` rows per wds shard)."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if n < 1:
        raise DatasetError(f"--n must be at least 1, got {n}")
    if shard_size < 1:
        raise DatasetError(f"--shard-size must be at least 1, got {shard_size}")
    world = ShapesWorld(split, size, size, seed=seed)
    staging = prepare_output(out, overwrite)
    try:
        rows = (world[i] for i in range(n))
        bar = tqdm(rows, total=n, desc=f"world {split} -> {fmt}", unit="row", disable=not progress)
        if fmt == "wds":
            _write_wds(staging, bar, split, shard_size)
        else:
            {"imagefolder": _write_imagefolder, "llava": _write_llava}[fmt](staging, bar, split)
        (staging / "world.json").write_text(
            json.dumps(
                {
                    "generator": "vlgpt world",
                    "split": split,
                    "n": n,
                    "seed": seed,
                    "size": size,
                    "format": fmt,
                },
                indent=2,
            )
        )
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return commit_output(staging, out)


def _write_imagefolder(root: Path, rows, split: str) -> None:
    # datasets' imagefolder reads metadata.jsonl inside a split-named folder (train/, val/, test/).
    root = root / split
    root.mkdir()
    with open(root / METADATA_FILE, "w", encoding="utf-8") as meta:
        for row in rows:
            file_name = f"{row['id']}.png"
            save_png(render(Scene.from_dict(row["scene"])), root / file_name)
            meta.write(
                json.dumps(
                    {
                        "file_name": file_name,
                        "text": row["caption"],
                        "id": row["id"],
                        "references": row["references"],
                        "questions": row["questions"],
                        "scene": json.dumps(row["scene"]),
                        "edit_instruction": row["edit"]["instruction"] if row["edit"] else "",
                        "edit_target": json.dumps(row["edit"]["target"]) if row["edit"] else "",
                    }
                )
                + "\n"
            )


def _write_llava(root: Path, rows, split: str) -> None:
    entries = []
    for row in rows:
        image = f"images/{row['id']}.png"
        save_png(render(Scene.from_dict(row["scene"])), root / image)
        target = None
        if row["edit"] is not None:
            target = f"images/{row['id']}.target.png"
            save_png(render(Scene.from_dict(row["edit"]["target"])), root / target)
        for entry in llava_conversations(row, image, target):
            entry["scene"] = row["scene"]
            entries.append(entry)
    (root / LLAVA_FILE).write_text(json.dumps(entries), encoding="utf-8")


def _write_wds(root: Path, rows, split: str, shard_size: int) -> None:
    import webdataset as wds

    (root / "shards").mkdir()
    pattern = str(root / "shards" / f"{split}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for row in rows:
            sample = {
                "__key__": row["id"],
                "png": image_bytes(render(Scene.from_dict(row["scene"]))),
                "json": json.dumps(row).encode(),
                "txt": row["caption"].encode(),
            }
            if row["edit"] is not None:
                sample["target.png"] = image_bytes(render(Scene.from_dict(row["edit"]["target"])))
            sink.write(sample)
