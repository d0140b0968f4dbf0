"""Streaming WebDataset shards: every sample once per epoch, nothing read ahead, exact resume."""

import json

import pytest
import torch

from vlgpt.core.config import TrainConfig
from vlgpt.core.presets import preset
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data import streaming
from vlgpt.data.formats import DatasetError
from vlgpt.data.sources import make_source
from vlgpt.data.streaming import StreamingSource
from vlgpt.train.engine import Trainer
from vlgpt.train.stages import StageInputs
from vlgpt.train.stages.clip import ClipStage

TINY = preset("tiny").model
CFG = TrainConfig(
    steps=12,
    batch_size=8,
    lr=3e-3,
    warmup_steps=2,
    save_every=4,
    log_every=1,
    precision="fp32",
    eval_size=8,
    seed=0,
)


def test_each_sample_once_per_epoch_and_a_new_order_each_epoch(tiny_shards):
    source = make_source(tiny_shards, 32, seed=0, part="train", holdout=8)
    val = make_source(tiny_shards, 32, seed=0, part="val", holdout=8)
    assert isinstance(source, StreamingSource)
    assert (len(source), len(val)) == (58, 6)  # the holdout is capped at a tenth, as for dataset folders
    epoch = [source._locate(i) for i in range(len(source))]
    held_out = {val._locate(i) for i in range(len(val))}
    assert len(set(epoch)) == 58 and not set(epoch) & held_out and len(set(epoch) | held_out) == 64
    next_epoch = [source._locate(len(source) + i) for i in range(len(source))]
    assert set(next_epoch) == set(epoch) and next_epoch != epoch
    assert [val._locate(i) for i in range(6)] == sorted(held_out)  # val is read in file order


def test_nothing_is_decoded_until_asked_for(tiny_shards, monkeypatch):
    decoded = []
    real = streaming.load_image
    monkeypatch.setattr(
        streaming, "load_image", lambda blob, **kw: decoded.append(kw["label"]) or real(blob, **kw)
    )
    source = StreamingSource(tiny_shards, 32, seed=0)
    assert decoded == []  # opening reads tar headers only
    image, caption, group = source.get(100)  # the second epoch, fast-forwarded in O(1)
    assert image.shape == (32, 32, 3) and caption and group == caption.lower().strip(" .")
    assert len(decoded) == 1 and ":" in decoded[0]
    assert source.scene(100).objects  # the scene from the sample's JSON, for the judge


def test_a_broken_shard_is_named(tmp_path):
    bad = tmp_path / "shard-000000.tar"
    bad.write_bytes(b"not a tar file at all" * 40)
    with pytest.raises(DatasetError, match="shard-000000.tar: not a readable tar shard"):
        StreamingSource(str(bad), 32)


class Recorder:
    """Wraps a task's batch() to keep what each call returned."""

    def __init__(self, task):
        self.task, self.calls = task, []
        self.real = task.batch
        task.batch = self

    def __call__(self, start: int, size: int) -> dict:
        batch = self.real(start, size)
        self.calls.append((start, batch))
        return batch


class Crash(Exception):
    pass


def test_after_a_resume_the_next_8_batches_are_the_uninterrupted_runs(tmp_path, tiny_shards):
    tokenizer = TextTokenizer.train(StreamingSource(tiny_shards, 32).corpus(), 512)

    def task():
        return ClipStage(StageInputs(TINY, tiny_shards, 0, 8), text_tokenizer=tokenizer)

    straight = Recorder(task())
    Trainer(straight.task, CFG, tmp_path / "straight", progress=False).fit()

    crashing = task()
    clean_batch = crashing.batch

    def dies_in_step_5(start: int, size: int) -> dict:  # after the checkpoint of step 4
        if start >= 4 * 8:
            raise Crash()
        return clean_batch(start, size)

    crashing.batch = dies_in_step_5
    with pytest.raises(Crash):
        Trainer(crashing, CFG, tmp_path / "resumed", progress=False).fit()
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["data_position"] == 4 * 8

    resumed = Recorder(task())
    Trainer(resumed.task, CFG, tmp_path / "resumed", resume=True, progress=False).fit()
    expected = straight.calls[4:12]  # steps 5..12; the stream wraps into its second epoch at step 8
    assert (
        [start for start, _ in resumed.calls[:8]]
        == [start for start, _ in expected]
        == list(range(32, 96, 8))
    )
    for (_, got), (_, want) in zip(resumed.calls[:8], expected):
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
