"""The image tokenizer-detokenizer learns: 8 fixed scenes come back judged exactly the same."""

import pytest

from vlgpt.image_codec import ImageCodecPipeline
from vlgpt.train import train_stage
from vlgpt.world.export import write_world
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.render import render
from vlgpt.world.dataset import ShapesWorld

# A small model at 64x64 (the judge's resolution), trained on 8 scenes only.
MODEL = ["clip.vision.width=64", "clip.vision.depth=2", "clip.text.width=64", "clip.text.depth=1",
         "clip.embed_dim=64", "tokenizer.num_tokens=8", "tokenizer.token_dim=64", "tokenizer.width=64",
         "tokenizer.depth=1", "tokenizer.detokenizer_depth=1", "decoder.channels=64"]
RECIPES = {"clip": dict(steps=60, lr=2e-3), "tokenizer": dict(steps=250, lr=3e-3),
           "decoder": dict(steps=1000, lr=3e-3)}


@pytest.mark.timeout(480)
def test_eight_scenes_reconstruct_exactly(tmp_path):
    data = tmp_path / "eight"
    write_world(data, 8, split="val", progress=False)
    run = tmp_path / "run"
    for stage, recipe in RECIPES.items():
        train_stage(stage, run, preset_name="small", data=str(data), val_data=str(data), model_overrides=tuple(MODEL),
                    train_overrides=dict(batch_size=8, warmup_steps=10, save_every=0, log_every=50, eval_size=8,
                                         precision="fp32", **recipe), progress=False)
    codec = ImageCodecPipeline.load(run)
    world = ShapesWorld("val")
    scenes = [world.scene(i) for i in range(8)]
    outputs = codec.reconstruct([render(s) for s in scenes])
    results = [compare_scenes(judge(out), scene) for out, scene in zip(outputs, scenes)]
    assert [r["exact"] for r in results] == [True] * 8, results
