"""Datasets in the formats real tools use: written atomically, read back by those tools and ours."""

import json
import subprocess
import sys

import pytest

from vlgpt.data import world_files as export
from vlgpt.data.formats import DatasetError, read_examples
from vlgpt.data.world_files import write_world


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    for fmt in ("imagefolder", "llava", "wds"):
        write_world(root / fmt, 24, split="val", fmt=fmt, progress=False)
    return root


def test_imagefolder_loads_with_hugging_face_datasets(datasets_dir):
    import datasets

    ds = datasets.load_dataset("imagefolder", data_dir=str(datasets_dir / "imagefolder"), split="validation")
    assert len(ds) == 24
    row = ds[0]
    assert row["image"].size == (64, 64)
    assert row["text"].endswith(".") and len(row["text"]) > 5
    assert row["questions"][0]["answer"]


def test_wds_shards_load_with_webdataset(datasets_dir):
    import webdataset as wds

    shards = sorted(str(p) for p in (datasets_dir / "wds" / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("png", "txt", "json"))
    assert len(samples) == 24
    image, text, meta = samples[0]
    assert image.size == (64, 64) and text == meta["caption"]


def test_llava_json_images_exist(datasets_dir):
    root = datasets_dir / "llava"
    entries = json.loads((root / "llava.json").read_text())
    assert {e["id"].rsplit("-", 1)[1] for e in entries} >= {"caption", "vqa", "draw", "edit"}
    for entry in entries:
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        assert all((root / i).is_file() for i in images)
        placeholders = sum(turn["value"].count("<image>") for turn in entry["conversations"])
        assert placeholders == len(images), entry["id"]


@pytest.mark.parametrize("fmt", ["imagefolder", "llava", "wds"])
def test_our_reader_reads_every_format(datasets_dir, fmt):
    examples = list(read_examples(datasets_dir / fmt))
    assert len(examples) >= 24
    first = examples[0]
    assert first.load_images()[0].size == (64, 64)
    assert first.caption or first.conversations


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = export.render

    def failing(scene):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")
        return real(scene)

    monkeypatch.setattr(export, "render", failing)
    with pytest.raises(RuntimeError):
        write_world(tmp_path / "out", 10, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_non_empty_output_and_unknown_dataset(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty"):
        write_world(tmp_path / "taken", 2, progress=False)
    assert (tmp_path / "taken" / "file").read_text() == "keep me"
    with pytest.raises(DatasetError, match="no dataset"):
        list(read_examples(tmp_path / "taken"))


def test_cli_world_and_its_errors(tmp_path):
    out = tmp_path / "w"
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlgpt",
            "world",
            "--out",
            str(out),
            "--n",
            "5",
            "--format",
            "llava",
            "--split",
            "comp-test",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (out / "llava.json").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "vlgpt", "world", "--out", str(tmp_path / "x"), "--size", "16"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "canvas width 16 is outside 32..256" in bad.stderr and "Traceback" not in bad.stderr
    unwritable = subprocess.run(
        [sys.executable, "-m", "vlgpt", "world", "--out", "/proc/vlgpt/x", "--n", "2"],
        capture_output=True,
        text=True,
    )
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr


def test_cli_judge_reads_an_image_and_refuses_garbage(tmp_path):
    from vlgpt.world.dataset import ShapesWorld

    world = ShapesWorld("test")
    path = tmp_path / "scene.png"
    world.image(world[0]).save(path)
    ok = subprocess.run([sys.executable, "-m", "vlgpt", "judge", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    judged = json.loads(ok.stdout)
    assert len(judged["objects"]) == len(world.scene(0).objects)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    bad = subprocess.run(
        [sys.executable, "-m", "vlgpt", "judge", str(garbage)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "garbage.png" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("fmt", ["imagefolder", "wds"])
def test_a_source_gives_scenes_in_the_pixels_it_gives(datasets_dir, fmt):
    """Data written at 64 px, read for a 32 px model: each scene is in the resized picture's pixels, so
    the judge reads the picture as its scene (the clip stage's probes and the decoder stage's judge
    rely on it)."""
    from PIL import Image

    from vlgpt.data.sources import make_source
    from vlgpt.world.judge import compare_scenes, judge

    source = make_source(str(datasets_dir / fmt), 32, part="val")
    assert source.has_scenes
    verdicts = []
    for i in range(8):
        pixels, scene = source.get(i)[0], source.scene(i)
        assert pixels.shape == (32, 32, 3) and (scene.width, scene.height) == (32, 32)
        verdicts.append(compare_scenes(judge(Image.fromarray(pixels)), scene)["exact"])
    assert all(verdicts), verdicts
