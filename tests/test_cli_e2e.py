"""Every CLI verb end to end on a tiny run trained through the real entry point."""

import json
import re
import subprocess
import sys

import pytest

from vlgpt.world.dataset import ShapesWorld


def vlgpt(*args, input_text=None, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "vlgpt", *map(str, args)],
        capture_output=True,
        text=True,
        input=input_text,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny-run")
    for stage in ("clip", "tokenizer", "decoder", "pretrain", "instruct"):
        lora = ["--lora-rank", "4"] if stage == "instruct" else []  # the paper's instruction tuning
        vlgpt("train", stage, "--preset", "tiny", "--out", run, "--steps", "6", "--save-every", "0", *lora)
        assert (run / stage / "model" / "model.safetensors").is_file()
    assert (run / "instruct" / "model" / "adapter.safetensors").is_file()
    return run


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    world = ShapesWorld("val", 32, 32)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    world.image(world[0]).save(path)
    return path


def test_stage_outputs_and_metrics(run):
    for stage in ("clip", "tokenizer", "decoder", "pretrain", "instruct"):
        config = json.loads((run / stage / "model" / "config.json").read_text())
        assert config["kind"] in ("clip", "tokenizer", "decoder", "vlgpt")
        rows = [json.loads(line) for line in (run / stage / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["step"] == 6


def test_each_stage_writes_its_recipe_and_dry_run_prints_it(run, tmp_path):
    """RUN/<stage>/config.yaml is the resolved recipe; --config reads it back to the same configs, and
    --dry-run prints it without training anything."""
    import yaml

    from vlgpt.train import resolve_configs

    for stage in ("clip", "tokenizer", "decoder", "pretrain", "instruct"):
        recipe = yaml.safe_load((run / stage / "config.yaml").read_text())
        assert recipe["train"]["steps"] == 6 and set(recipe) == {"model", "train", "data"}
        assert recipe["data"] == {"data": "world", "val_data": None}
    model, train = resolve_configs("decoder", "tiny", str(run / "decoder" / "config.yaml"))
    assert train.steps == 6 and model.decoder == resolve_configs("decoder", "tiny")[0].decoder
    dry = ("train", "decoder", "--preset", "tiny", "--out", tmp_path / "r", "--dry-run")
    out = vlgpt(*dry, "--set", "decoder.channels=48")
    printed = yaml.safe_load(out.stdout)
    assert printed["model"]["decoder"]["channels"] == 48 and not (tmp_path / "r").exists()
    (tmp_path / "c.yaml").write_text(out.stdout)
    again = vlgpt(*dry, "--config", tmp_path / "c.yaml")
    assert again.stdout == out.stdout
    # The recipe alone repeats a stage: the same losses and the same final evaluation.
    vlgpt(
        "train",
        "clip",
        "--preset",
        "tiny",
        "--out",
        tmp_path / "again",
        "--config",
        run / "clip" / "config.yaml",
    )
    losses = [
        [
            json.loads(line).get("loss")
            for line in (folder / "clip" / "metrics.jsonl").read_text().splitlines()
        ]
        for folder in (run, tmp_path / "again")
    ]
    assert losses[0] == losses[1]
    final = [
        json.loads((folder / "clip" / "model" / "metrics.json").read_text())
        for folder in (run, tmp_path / "again")
    ]
    assert final[0] == final[1]
    # The recipe names its data, so replaying it reads the same folder; a missing one is named
    # before any model is built.
    (tmp_path / "c.yaml").write_text(out.stdout.replace("data: world", f"data: {tmp_path / 'gone'}"))
    replay = vlgpt(*dry, "--config", tmp_path / "c.yaml")
    assert yaml.safe_load(replay.stdout)["data"]["data"] == str(tmp_path / "gone")
    failed = vlgpt(
        "train",
        "decoder",
        "--preset",
        "tiny",
        "--out",
        tmp_path / "r",
        "--config",
        tmp_path / "c.yaml",
        check=False,
    )
    assert failed.returncode != 0 and f"dataset {tmp_path / 'gone'} does not exist" in failed.stderr
    assert not (tmp_path / "r" / "decoder").exists()


def test_reconstruct_and_eval(run, image, tmp_path):
    out = tmp_path / "recon.png"
    vlgpt("reconstruct", image, "--ckpt", run, "-o", out)
    assert out.is_file()
    result = vlgpt("eval", "reconstruction", "--ckpt", run, "--n", "10", "--output", tmp_path / "eval.json")
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["judge_exact"]["n"] == 10 and "image_to_text_r1" in metrics
    assert "judge_count" in result.stdout


def test_generation_verbs(run, image, tmp_path):
    assert vlgpt("caption", image, "--ckpt", run, "--max-tokens", "5").returncode == 0
    assert (
        vlgpt("ask", image, "How many shapes are there?", "--ckpt", run, "--max-tokens", "3").returncode == 0
    )
    for verb, extra in (
        ("imagine", ["a red circle"]),
        ("edit", [image, "Make the circle blue.", "--draw-anyway"]),
    ):
        out = tmp_path / f"{verb}.png"
        vlgpt(verb, *extra, "--ckpt", run, "-o", out)
        assert out.is_file()
    # Without --draw-anyway the model may decline in words: then it says so and writes nothing.
    out = tmp_path / "maybe.png"
    result = vlgpt("edit", image, "Make the circle blue.", "--ckpt", run, "-o", out)
    assert result.returncode == 0 and out.is_file() != result.stdout.startswith("not edited: ")


def test_scripted_chat_session(run, image, tmp_path):
    script = f"/image {image}\nDescribe the image.\n/image /does/not/exist.png\nDraw: a blue star\n/quit\n"
    result = vlgpt(
        "chat",
        "--ckpt",
        run,
        "--save-dir",
        tmp_path / "drawn",
        "--max-tokens",
        "4",
        "--temperature",
        "0.8",
        input_text=script,
    )
    assert "(attached" in result.stdout and "no such file" in result.stdout
    assert result.stdout.count("you>") >= 4


def test_bad_requests_are_clear_errors(run, image):
    bad = vlgpt("caption", image, "--ckpt", run, "--temperature", "-1", check=False)
    assert bad.returncode == 2 and "temperature must be >= 0" in bad.stderr
    wrong = vlgpt("caption", image, "--ckpt", run / "clip", check=False)
    assert wrong.returncode == 2 and "no trained VL-GPT" in wrong.stderr
    empty = vlgpt("ask", image, "  ", "--ckpt", run, check=False)
    assert empty.returncode == 2 and "question is empty" in empty.stderr


def test_eval_all_writes_every_task(run, tmp_path):
    out = tmp_path / "all.json"
    printed = vlgpt("eval", "all", "--ckpt", run, "--n", "6", "--output", out).stdout
    metrics = json.loads(out.read_text())
    # Each printed headline figure with its interval and n, the interval around it (BLEU's too).
    rows = [line for line in printed.splitlines() if line.split(" ")[0] in metrics["headline"]]
    assert len(rows) == len(metrics["headline"])
    assert all(re.search(r"\d \[[-\d.]+, [-\d.]+\] n=\d+$", line) for line in rows), printed
    for figure in (*metrics["vqa"].values(), metrics["captioning"]["bleu4"], metrics["t2i"]["overall"]):
        assert figure["ci_low"] <= figure["mean"] <= figure["ci_high"]
    assert set(metrics["headline"]) >= {
        "caption_attribute_f1",
        "vqa_accuracy",
        "t2i_overall",
        "editing_accuracy",
        "compositional_t2i_overall",
        "few_shot_k=0",
        "few_shot_k=4",
    }
    assert metrics["t2i"]["overall"]["n"] > 0


def test_quick_demo_then_report_keeps_the_demo_page(tmp_path):
    """`vlgpt demo --quick` end to end (about 15 s): its headline printed with intervals, its page
    with every section; `vlgpt report` on the run then writes beside it and changes nothing of it;
    `vlgpt export` carries its figures into the model card."""
    run = tmp_path / "demo"
    printed = vlgpt("demo", "--quick", "--out", run).stdout
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [line for line in printed.splitlines() if line.split(" ")[0] in metrics["headline"]]
    assert rows and all(re.search(r"\d \[[-\d.]+, [-\d.]+\] n=\d+$", line) for line in rows), printed
    page = (run / "report.html").read_text()
    sections = (
        "Headline metrics",
        "Questions",
        "Edits",
        "An interleaved answer",
        "Image tokenizer",
        "Training curves",
    )
    assert all(section in page for section in sections) and "value [95% CI] n" in page
    said = vlgpt("report", run, "--n", "1").stdout
    assert (run / "report.html").read_text() == page and "run_report.html" in said
    assert "Training curves" in (run / "run_report.html").read_text()
    # Exported, the test-set figures and the reconstruction's stand in the model card with interval and n.
    vlgpt("export", run, tmp_path / "shared")
    card = (tmp_path / "shared" / "README.md").read_text()
    for name in ("metrics: caption_attribute_f1", "metrics: t2i_overall", "eval_reconstruction: judge_exact"):
        assert re.search(rf"\| {name} \| [-\d.e]+ \| \[[-\d.e]+, [-\d.e]+\] \| \d+ \|", card), card
