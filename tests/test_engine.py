"""The training engine: exact resume, SIGTERM, kill -9 mid-save, and the non-finite guard."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vlgpt.core.checkpoint import load_weights
from vlgpt.core.config import TrainConfig
from vlgpt.core.presets import preset
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data.sources import WorldSource
from vlgpt.models.clip import CLIP
from vlgpt.train.engine import EXIT_PREEMPTED, Preempted, Trainer, TrainingError
from vlgpt.train.stages import StageInputs
from vlgpt.train.stages.clip import ClipStage

TINY = preset("tiny").model
CFG = TrainConfig(
    steps=6,
    batch_size=8,
    lr=3e-3,
    warmup_steps=2,
    save_every=3,
    log_every=1,
    precision="fp32",
    eval_size=16,
    seed=0,
)


@pytest.fixture(scope="module")
def text_tokenizer():
    return TextTokenizer.train(WorldSource("train", 32).corpus(100), 512)


def make_task(text_tokenizer):
    return ClipStage(StageInputs(TINY, "world", 0, 16), text_tokenizer=text_tokenizer)


def losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


class SigtermAt(Trainer):
    """Sends itself SIGTERM in the middle of a step, as a cluster's preemption would."""

    def __init__(self, *args, at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.at = at

    def train_step(self):
        if self.step == self.at - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_step()


def test_resume_after_sigterm_is_exact(tmp_path, text_tokenizer):
    straight = Trainer(make_task(text_tokenizer), CFG, tmp_path / "a", progress=False)
    straight.fit()
    with pytest.raises(Preempted) as stopped:
        SigtermAt(make_task(text_tokenizer), CFG, tmp_path / "b", progress=False, at=2).fit()
    assert stopped.value.code == EXIT_PREEMPTED
    assert (tmp_path / "b" / "checkpoints" / "step-000002" / "manifest.json").is_file()
    resumed = Trainer(make_task(text_tokenizer), CFG, tmp_path / "b", resume=True, progress=False)
    resumed.fit()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert len(losses(tmp_path / "a")) == CFG.steps
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, text_tokenizer):
    cfg = dataclasses.replace(CFG, steps=2, save_every=1)
    Trainer(make_task(text_tokenizer), cfg, tmp_path, progress=False).fit()
    with pytest.raises(TrainingError, match="pass --resume"):
        Trainer(make_task(text_tokenizer), cfg, tmp_path, progress=False).fit()


def test_non_finite_batches_are_skipped_and_weights_stay(tmp_path, text_tokenizer):
    task = make_task(text_tokenizer)
    cfg = dataclasses.replace(CFG, max_bad_steps=2, save_every=1)
    trainer = Trainer(task, cfg, tmp_path, progress=False)
    trainer.prepare()
    trainer.train_step()
    trainer.save_checkpoint()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    clean_batch = task.batch

    def poisoned(start, size):
        batch = clean_batch(start, size)
        batch["pixels"][0, 0, 0, 0] = float("nan")
        return batch

    task.batch = poisoned
    record = trainer.train_step()
    assert record["skipped"] == 1 and record["loss"] != record["loss"]  # the logged loss shows the NaN
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(TrainingError, match="2 non-finite steps in a row.*step-000001"):
        trainer.train_step()
    task.batch = clean_batch
    fresh = CLIP(TINY.clip)
    load_weights(tmp_path / "checkpoints" / "step-000001", fresh)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), before.values()))


def test_kill_9_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "vlgpt",
        "train",
        "clip",
        "--preset",
        "tiny",
        "--out",
        str(run),
        "--steps",
        "8",
        "--save-every",
        "2",
        "--precision",
        "fp32",
    ]
    env = {**os.environ, "VLGPT_FAULT_PAUSE_SAVE_STEP": "4"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run / "clip" / "checkpoints" / "PAUSED"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), "the training never reached the paused save"
    process.kill()
    process.wait()
    checkpoints = run / "clip" / "checkpoints"
    assert (checkpoints / "step-000004.tmp").is_dir()  # the interrupted save
    assert (checkpoints / "step-000002" / "manifest.json").is_file()
    load_weights(checkpoints / "step-000002", CLIP(TINY.clip))
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "step-000002" in resumed.stdout
    assert not (checkpoints / "step-000004.tmp").exists()
    assert (run / "clip" / "model" / "model.safetensors").is_file()


def test_resume_across_a_real_sigterm_is_exact(tmp_path, tiny_shards):
    """A real `python -m vlgpt train` stopped by SIGTERM after step 3 and resumed: the same 8
    per-step losses and the same final weights as a run never stopped (streamed shards, which
    wrap into their second epoch at step 8)."""

    def command(run: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "vlgpt",
            "train",
            "clip",
            "--preset",
            "tiny",
            "--out",
            str(run),
            "--data",
            tiny_shards,
            "--steps",
            "8",
            "--batch-size",
            "8",
            "--save-every",
            "0",
            "--log-every",
            "1",
            "--precision",
            "fp32",
            "--eval-size",
            "8",
            "--threads",
            "1",
        ]

    straight = subprocess.run(command(tmp_path / "straight"), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "stopped"
    process = subprocess.Popen(
        command(run),
        env={**os.environ, "VLGPT_FAULT_PAUSE_STEP": "3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = run / "clip" / "PAUSED"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the training never paused after step 3"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "stopped by signal at step 3" in out
    state = json.loads((run / "clip" / "checkpoints" / "step-000003" / "state.json").read_text())
    assert (state["step"], state["data_position"]) == (3, 24)
    resumed = subprocess.run(command(run) + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(run / "clip") == losses(tmp_path / "straight" / "clip")
    assert [step for step, _ in losses(run / "clip")] == list(range(1, 9))
    weights = [
        (r / "clip" / "model" / "model.safetensors").read_bytes() for r in (run, tmp_path / "straight")
    ]
    assert weights[0] == weights[1]
