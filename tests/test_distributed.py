"""Data parallelism on CPU (gloo): torchrun runs of the real CLI against a one-process reference.

Every run trains the tiny CLIP for 5 steps on streamed WebDataset shards. Two processes at
grad_accum 1 must compute what one process computes at grad_accum 2.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlgpt.cli import main
from vlgpt.core.checkpoint import CheckpointError
from vlgpt.core.config import TrainConfig
from vlgpt.core.presets import preset
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data.streaming import StreamingSource
from vlgpt.models.loading import load_clip
from vlgpt.train import train_stage
from vlgpt.train.distributed import Distributed, check_sharded_metadata
from vlgpt.train.engine import Trainer
from vlgpt.train.stages import StageInputs
from vlgpt.train.stages.clip import ClipStage

STEPS = 5
RECIPE = dict(steps=STEPS, batch_size=8, precision="fp32", log_every=1, save_every=0, eval_size=8)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def shards(tiny_shards) -> str:
    return tiny_shards


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shards) -> Path:
    """One process, two micro-batches of 8 per step: the global batch of two processes at 8 each.

    One thread, as each torchrun worker has: the attention key biases get gradients that are pure
    rounding noise (softmax ignores them), which AdamW scales up to lr-sized steps, so a different
    summation order would show in those weights."""
    run = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    try:
        train_stage(
            "clip",
            run,
            preset_name="tiny",
            data=shards,
            train_overrides=dict(RECIPE, grad_accum=2, threads=1),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return run / "clip"


def torchrun(run: Path, shards: str, *flags: str) -> list[str]:
    recipe = [f"--{k.replace('_', '-')}={v}" for k, v in RECIPE.items()]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "vlgpt",
        "train",
        "clip",
        "--preset",
        "tiny",
        "--out",
        str(run),
        "--data",
        shards,
        *recipe,
        *flags,
    ]


def losses(stage_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stage_dir / "model" / "model.safetensors"))


def wait_for(marker: Path, process: subprocess.Popen, seconds: float = 180) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        text = marker.read_text().strip() if marker.exists() else ""
        if text.isdigit():  # the marker may exist a moment before its pid is written
            return text
        time.sleep(0.1)
    raise AssertionError(
        f"the run never paused: {process.communicate()[1][-3000:] if process.poll() else ''}"
    )


def test_ddp_on_two_processes_equals_one_process(tmp_path, shards, reference):
    run = tmp_path / "ddp"
    result = subprocess.run(
        torchrun(run, shards, "--strategy=ddp"), env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("final evaluation") == 1  # rank 0 alone reports, logs and writes
    assert len(losses(run / "clip")) == STEPS
    torch.testing.assert_close(losses(run / "clip"), losses(reference), rtol=1e-5, atol=1e-6)
    ddp, one = weights(run / "clip"), weights(reference)
    assert ddp.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-5, atol=1e-5, msg=name)


def test_fsdp_stops_together_resumes_and_exports(tmp_path, shards, reference):
    run = tmp_path / "fsdp"
    command = torchrun(run, shards, "--strategy=fsdp")
    process = subprocess.Popen(
        command,
        env={**ENV, "VLGPT_FAULT_PAUSE_STEP": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rank0 = int(wait_for(run / "clip" / "PAUSED", process))
    os.kill(rank0, signal.SIGTERM)  # rank 0 alone: rank 1 must stop at the same step through the agreement
    out, err = process.communicate(timeout=180)
    assert process.returncode != 0 and "stopped by signal at step 2" in out, err[-3000:]
    checkpoints = run / "clip" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["step-000002"]
    sharded = checkpoints / "step-000002" / "sharded"
    assert {p.name for p in sharded.iterdir()} == {
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    }  # both ranks saved

    resumed = subprocess.run(command + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step-000002" in resumed.stdout
    # FSDP reduces in another order than one process does: equal up to float rounding, step by step.
    torch.testing.assert_close(losses(run / "clip"), losses(reference), rtol=1e-4, atol=1e-5)
    model, _ = load_clip(run)  # the export loads in one process with the ordinary loader
    one = weights(reference)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, one[name], rtol=1e-3, atol=1e-3, msg=name)


def test_a_rank_that_dies_ends_the_job(tmp_path, shards):
    run = tmp_path / "dies"
    process = subprocess.Popen(
        torchrun(run, shards, "--strategy=ddp"),
        env={**ENV, "VLGPT_FAULT_PAUSE_STEP": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rank0 = int(wait_for(run / "clip" / "PAUSED", process))
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    rank1 = next(int(pid) for pid in workers if int(pid) != rank0)
    os.kill(rank1, signal.SIGKILL)
    started = time.time()
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert time.time() - started < 60, "the surviving rank hung"
    assert "rank 0: lost contact with another process at step 2" in err
    with pytest.raises(ProcessLookupError):
        os.kill(rank0, 0)


def nan_on_rank_1_at_step_2(rank: int, port: int, shards: str, tokenizer_dir: str, out: str) -> None:
    """A worker of the test below: three steps of the tiny CLIP; rank 1's batch of step 2 is NaN."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    torch.set_num_threads(1)
    task = ClipStage(
        StageInputs(preset("tiny").model, shards, 0, 8), text_tokenizer=TextTokenizer.load(tokenizer_dir)
    )
    clean_batch = task.batch

    def batch(start: int, size: int) -> dict:
        poisoned = clean_batch(start, size)
        if rank == 1 and start == 2 * 16 + 8:  # step 2 (0-based), rank 1's half of the global batch
            poisoned["pixels"][0, 0, 0, 0] = float("nan")
        return poisoned

    task.batch = batch
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=1, precision="fp32", max_bad_steps=2, seed=0)
    trainer = Trainer(task, config, Path(out), progress=False, dist=Distributed.joined(torch.device("cpu")))
    trainer.prepare()
    records, snapshots = [], []
    for _ in range(3):
        records.append(trainer.sync(trainer.train_step())[0])
        snapshots.append({k: v.clone() for k, v in task.model.state_dict().items()})
    torch.save({"records": records, "snapshots": snapshots}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path, shards):
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    TextTokenizer.train(StreamingSource(shards, 32).corpus(), 512).save(tokenizer_dir)
    torch.multiprocessing.spawn(
        nan_on_rank_1_at_step_2, args=(free_port(), shards, str(tokenizer_dir), str(tmp_path)), nprocs=2
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for result in ranks:
        assert [r["skipped"] for r in result["records"]] == [0, 0, 1]
        assert result["records"][2]["loss"] != result["records"][2]["loss"]  # the logged loss shows the NaN
        for name, value in result["snapshots"][2].items():  # the skipped step left the weights alone
            assert torch.equal(value, result["snapshots"][1][name]), name
    for name, value in ranks[0]["snapshots"][2].items():  # and the replicas still agree
        assert torch.equal(value, ranks[1]["snapshots"][2][name]), name


def test_fsdp_needs_torchrun(tmp_path, capsys):
    code = main(["train", "clip", "--preset", "tiny", "--out", str(tmp_path), "--strategy", "fsdp"])
    assert code == 2
    assert "launch with torchrun" in capsys.readouterr().err
    assert not (tmp_path / "clip").exists()


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoint_metadata_is_checked_before_dcp_unpickles_it(tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good"
    dcp.save({"model": {"w": torch.ones(3)}}, checkpoint_id=good)
    check_sharded_metadata(good)  # what DCP writes for tensors passes

    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="posix.system is not allowed|os.system is not allowed"):
        check_sharded_metadata(crafted)
    assert not (tmp_path / "PWNED").exists()

    objects = tmp_path / "objects"  # non-tensor entries would be unpickled by DCP itself
    dcp.save({"model": {"w": torch.ones(3)}, "note": {"x": 1}}, checkpoint_id=objects)
    with pytest.raises(CheckpointError, match="non-tensor entries"):
        check_sharded_metadata(objects)
