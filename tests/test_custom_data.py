"""Bring your own data: `vlgpt data check` finds every injected fault, and a captions dataset that is
not the Shapes world trains every stage and captions through the CLI."""

import io
import json
import re
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 220, 40)}


def vlgpt(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "vlgpt", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def stripes(a: str, b: str, vertical: bool, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), COLORS[a])
    for k in range(0, size, 8):
        box = (k + 4, 0, k + 8, size) if vertical else (0, k + 4, size, k + 8)
        image.paste(COLORS[b], box)
    return image


def stripes_dataset(root, n: int = 24):
    """An imagefolder of two-colour stripe patterns with captions, and a LLaVA file over the same images."""
    folder = root / "train"
    folder.mkdir(parents=True)
    names = list(COLORS)
    rows, entries = [], []
    for i in range(n):
        a, b, vertical = names[i % 4], names[(i // 4 + 1 + i) % 4], bool(i % 2)
        if a == b:
            b = names[(names.index(a) + 1) % 4]
        caption = f"{a} and {b} {'vertical' if vertical else 'horizontal'} stripes."
        stripes(a, b, vertical).save(folder / f"{i:03d}.png")
        rows.append({"file_name": f"{i:03d}.png", "text": caption})
        entries.append(
            {
                "id": f"s{i}",
                "image": f"train/{i:03d}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhich way do the stripes run?"},
                    {"from": "gpt", "value": "vertical" if vertical else "horizontal"},
                    {"from": "human", "value": "Describe the image."},
                    {"from": "gpt", "value": caption},
                ],
            }
        )
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    llava = root / "chat"
    llava.mkdir()
    (llava / "train").symlink_to(folder)
    (llava / "llava.json").write_text(json.dumps(entries))
    return root, llava


# --- vlgpt data check ------------------------------------------------------------------------------


def test_data_check_passes_a_clean_dataset(tmp_path):
    captions, chat = stripes_dataset(tmp_path, 8)
    for path in (captions, chat):
        result = vlgpt("data", "check", path)
        assert "ok" in result.stdout.splitlines()[-1]


def test_data_check_reports_each_injected_fault(tmp_path):
    captions, chat = stripes_dataset(tmp_path, 8)
    folder = captions / "train"
    (folder / "002.png").unlink()  # missing image
    (folder / "003.png").write_bytes((folder / "004.png").read_bytes()[:60])  # truncated PNG
    Image.new("RGB", (400, 400)).save(folder / "005.png")  # over the pixel cap given below
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    lines[6] = json.dumps({"file_name": "006.png", "text": "  "})  # empty caption
    lines[7] = "{not json"
    lines.append(json.dumps({"text": "no file"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    result = vlgpt("data", "check", captions, "--max-pixels", "100000", "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    found = {(p["where"].rsplit(":", 1)[-1], p["what"].split(" ")[0]) for p in report["problems"]}
    problems = " | ".join(f"{p['where']}: {p['what']}" for p in report["problems"])
    assert len(report["problems"]) == 6, problems
    for line, word in (("3", "image"), ("6", "too"), ("7", "empty"), ("8", "not"), ("9", "row")):
        assert any(where == line for where, _ in found), (line, word, problems)
    assert "002.png does not exist" in problems and "metadata.jsonl:4" in problems
    assert "larger" in problems or "pixels" in problems

    _, chat = stripes_dataset(tmp_path / "clean", 8)  # images intact: only the conversations are broken
    entries = json.loads((chat / "llava.json").read_text())
    entries[1]["conversations"] = [{"from": "human", "value": "<image>\nHi"}]  # no assistant turn
    entries[2]["conversations"][0]["value"] = "no placeholder"  # 0 <image> for 1 image
    entries[3]["conversations"][1]["from"] = "robot"
    entries[4]["image"] = "train/missing.png"
    (chat / "llava.json").write_text(json.dumps(entries))
    result = vlgpt("data", "check", chat, check=False)
    assert result.returncode == 1
    text = result.stdout
    assert "entry 1 (id s1): the conversation has no assistant" in text
    assert "entry 2 (id s2): 0 <image> placeholder(s) for 1 image(s)" in text
    assert "entry 3 (id s3): turn 1 has speaker 'robot'" in text
    assert "entry 4 (id s4): image" in text and "missing.png does not exist" in text
    assert "4 problem(s)" in text.splitlines()[-1]


def test_data_check_reads_shards_and_reports_a_truncated_one(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(2):
        with tarfile.open(shards / f"train-{k:06d}.tar", "w") as tar:
            for i in range(3):
                buffer = io.BytesIO()
                stripes("red", "blue", bool(i % 2)).save(buffer, format="PNG")
                members = {
                    "png": buffer.getvalue(),
                    "txt": b"" if (k, i) == (0, 1) else b"red and blue stripes.",
                }
                for ext, blob in members.items():
                    info = tarfile.TarInfo(f"{k}-{i}.{ext}")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    data = (shards / "train-000001.tar").read_bytes()
    (shards / "train-000001.tar").write_bytes(data[:700])
    result = vlgpt("data", "check", tmp_path / "shards", check=False)
    assert result.returncode == 1, result.stdout
    assert "train-000000.tar:0-1: empty caption" in result.stdout
    assert "train-000001.tar" in result.stdout


# --- a captions dataset that is not Shapes, through every stage ---------------------------------------


@pytest.fixture(scope="module")
def stripes_run(tmp_path_factory):
    captions, chat = stripes_dataset(tmp_path_factory.mktemp("stripes"), 24)
    run = tmp_path_factory.mktemp("stripes-run")
    common = ["--preset", "tiny", "--out", run, "--save-every", "0", "--eval-size", "8"]
    for stage in ("clip", "tokenizer", "decoder"):
        vlgpt("train", stage, "--data", captions, "--steps", "12", *common)
    vlgpt(
        "train", "pretrain", "--data", captions, "--steps", "80", "--lr", "3e-3", "--log-every", "2", *common
    )
    vlgpt("train", "instruct", "--data", chat, "--steps", "6", *common)
    return run, captions, chat


def test_a_custom_captions_dataset_trains_every_stage_and_captions(stripes_run, tmp_path):
    run, captions, chat = stripes_run
    rows = [json.loads(line) for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.6 * losses[0], losses  # it learns the captions, not just runs
    assert any("eval_val_ce" in r for r in rows)  # a held-out part of the dataset is evaluated
    instruct = [json.loads(line) for line in (run / "instruct" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_val_loss" in r for r in instruct)
    result = vlgpt("caption", captions / "train" / "000.png", "--ckpt", run, "--max-tokens", "12")
    assert any(word in result.stdout for word in COLORS), result.stdout  # it speaks the dataset's words
    result = vlgpt(
        "ask",
        captions / "train" / "001.png",
        "Which way do the stripes run?",
        "--ckpt",
        run,
        "--max-tokens",
        "4",
    )
    assert result.returncode == 0


def test_eval_data_reports_captions_and_answers_of_a_custom_run(stripes_run, tmp_path):
    run, captions, chat = stripes_run
    for data, key in ((captions, "captions"), (chat, "answers")):
        out = tmp_path / f"{key}.json"
        printed = vlgpt("eval", "data", data, "--ckpt", run, "--limit", "4", "--output", out).stdout
        report = json.loads(out.read_text())
        assert report["examples"] == 4 and key in report and report["headline"], report
        # Every printed figure with its interval and n, the interval around the value.
        rows = [line for line in printed.splitlines() if line.startswith(("caption ", "answer "))]
        assert rows and all(re.search(r"\d \[[-\d.e]+, [-\d.e]+\] n=\d+$", line) for line in rows), printed
        for figure in report["headline"].values():
            assert figure["ci_low"] <= figure["mean"] <= figure["ci_high"]
    result = vlgpt("eval", "data", "--ckpt", run, check=False)
    assert result.returncode != 0 and "needs the dataset" in result.stderr
    vlgpt("report", run, "--data", chat, "--n", "2")
    page = (run / "report.html").read_text()
    assert "Examples" in page and "Training curves" in page and page.count("<img") >= 3
    # A page `vlgpt report` did not write (the demo's, with its questions and edits) is never replaced.
    from vlgpt.eval.formatting import html_page

    demo_page = html_page("vlgpt demo report", ["<h2>Questions</h2>"])
    (run / "report.html").write_text(demo_page)
    said = vlgpt("report", run, "--n", "1").stdout
    assert (run / "report.html").read_text() == demo_page and "is the demo's: kept" in said
    assert "Training curves" in (run / "run_report.html").read_text()


def test_instruct_refuses_a_broken_conversation_with_its_place(stripes_run, tmp_path):
    run, captions, chat = stripes_run
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train").symlink_to(captions / "train")
    (bad / "llava.json").write_text(
        json.dumps(
            [
                {
                    "id": "x7",
                    "image": "train/000.png",
                    "conversations": [{"from": "human", "value": "<image>\nHello"}],
                }
            ]
        )
    )
    result = vlgpt(
        "train", "instruct", "--data", bad, "--preset", "tiny", "--out", run, "--steps", "1", check=False
    )
    assert result.returncode == 2
    assert "example x7" in result.stderr and "no assistant" in result.stderr and "data check" in result.stderr
