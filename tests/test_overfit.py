"""Tiny overfit runs prove the pieces learn.

1. The image tokenizer-detokenizer: 8 fixed scenes come back judged exactly the same.
2. VL-GPT on top of that codec: a tiny transformer learns to caption the 8 scenes and to draw each
   from its caption (judged), through the same `Pipeline` the CLI and server use.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
from vlgpt.data import sequences as S
from vlgpt.data.world_files import write_world
from vlgpt.inference.image_codec import ImageCodec
from vlgpt.inference.pipeline import Pipeline
from vlgpt.models.vlgpt import VLGPT
from vlgpt.train import train_stage
from vlgpt.world import language
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.render import render
from vlgpt.world.scene import Scene

# A small model at 64x64 (the judge's resolution), trained on 8 scenes only.
MODEL = [
    "clip.vision.width=64",
    "clip.vision.depth=2",
    "clip.text.width=64",
    "clip.text.depth=1",
    "clip.embed_dim=64",
    "tokenizer.num_tokens=8",
    "tokenizer.token_dim=64",
    "tokenizer.width=64",
    "tokenizer.depth=1",
    "tokenizer.detokenizer_depth=1",
    "decoder.channels=64",
    "decoder.mixer_depth=1",
]
RECIPES = {
    "clip": dict(steps=60, lr=2e-3),
    "tokenizer": dict(steps=250, lr=3e-3),
    "decoder": dict(steps=1500, lr=3e-3),
}


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("overfit")
    data = tmp / "eight"
    write_world(data, 8, split="val", progress=False)
    run = tmp / "run"
    for stage, recipe in RECIPES.items():
        train_stage(
            stage,
            run,
            preset_name="small",
            data=str(data),
            val_data=str(data),
            model_overrides=tuple(MODEL),
            train_overrides=dict(
                batch_size=8,
                warmup_steps=10,
                save_every=0,
                log_every=50,
                eval_size=8,
                precision="fp32",
                **recipe,
            ),
            progress=False,
        )
    return run


def small_vlgpt(codec: ImageCodec, draw: str = "next") -> VLGPT:
    torch.manual_seed(0)
    lm = LanguageModelConfig(width=96, depth=2, heads=2, mlp_hidden=256, max_seq_len=128, draw=draw)
    return VLGPT(VLGPTConfig(codec.text_tokenizer.vocab_size, codec.num_tokens, codec.token_dim, lm))


def overfit(model: VLGPT, batch: dict, steps: int) -> dict:
    """Full-batch AdamW on `batch`; the last step's outputs."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    return out


@pytest.fixture(scope="module")
def scenes():
    world = ShapesWorld("val")
    return [world.scene(i) for i in range(8)]


@pytest.mark.timeout(480)
def test_eight_scenes_reconstruct_exactly(codec_run, scenes):
    codec = ImageCodec.load(codec_run)
    outputs = codec.reconstruct([render(s) for s in scenes])
    results = [compare_scenes(judge(out), scene) for out, scene in zip(outputs, scenes)]
    assert [r["exact"] for r in results] == [True] * 8, results


@pytest.mark.timeout(300)
@pytest.mark.parametrize("draw_mode", ["next", "queries"])
def test_vlgpt_learns_to_caption_and_draw_eight_scenes(codec_run, scenes, draw_mode):
    codec = ImageCodec.load(codec_run)
    tokenizer = codec.text_tokenizer
    model = small_vlgpt(codec, draw_mode)
    images = [render(s) for s in scenes]
    embeddings = codec.encode(images)
    captions = [language.captions(s, np.random.default_rng(i))[0] for i, s in enumerate(scenes)]
    user = lambda *parts: {"role": "user", "content": list(parts)}
    bot = lambda *parts: {"role": "assistant", "content": list(parts)}
    sequences = []
    for caption, emb, scene in zip(captions, embeddings, scenes):
        describe = [
            user({"type": "image"}, {"type": "text", "text": "Describe the image."}),
            bot({"type": "text", "text": caption}),
        ]
        drawing = [
            user({"type": "text", "text": f"Draw: {caption}"}),
            bot({"type": "text", "text": language.layout(scene)}, {"type": "image"}),
        ]
        queries = draw_mode == "queries"
        sequences.append(
            S.build(S.chat_segments(describe, [emb]), tokenizer, codec.token_dim, draw_queries=queries)
        )
        sequences.append(
            S.build(S.chat_segments(drawing, [emb]), tokenizer, codec.token_dim, draw_queries=queries)
        )
    out = overfit(model, S.collate(sequences, tokenizer.pad_id), steps=400)
    assert out["ce"] < 0.05 and out["mse"] < 0.01, (out["ce"], out["mse"])

    pipeline = Pipeline(model, {}, codec, codec_run)
    for image, caption, scene in zip(images, captions, scenes):
        said = pipeline.caption(image, max_new_tokens=40)
        assert language.caption_attribute_scores(said, scene)["f1"] == 1.0, (said, caption)
        drawn = pipeline.imagine(caption)
        verdict = compare_scenes(judge(drawn), scene)
        assert verdict["exact"], (caption, verdict)


@pytest.mark.timeout(300)
def test_vlgpt_learns_to_refuse_impossible_edits_and_make_possible_ones(codec_run, scenes):
    """Four scenes, each with an edit it can make (answered with the target image) and one it cannot
    (answered with the world's sentence saying why): `edit` returns the sentence for the second and an
    image for the first."""
    world = ShapesWorld("val")
    rows = [r for r in (world[i] for i in range(8)) if r["edit"] and r["impossible_edit"]][:4]
    assert len(rows) == 4
    codec = ImageCodec.load(codec_run)
    tokenizer = codec.text_tokenizer
    model = small_vlgpt(codec)
    user = lambda *parts: {"role": "user", "content": list(parts)}
    bot = lambda *parts: {"role": "assistant", "content": list(parts)}
    text = lambda t: {"type": "text", "text": t}
    images = [render(Scene.from_dict(r["scene"])) for r in rows]
    targets = [render(Scene.from_dict(r["edit"]["target"])) for r in rows]
    sources, drawn = codec.encode(images), codec.encode(targets)
    sequences = []
    for row, source, target in zip(rows, sources, drawn):
        possible = [user({"type": "image"}, text(row["edit"]["instruction"])), bot({"type": "image"})]
        impossible = [
            user({"type": "image"}, text(row["impossible_edit"]["instruction"])),
            bot(text(row["impossible_edit"]["reply"])),
        ]
        sequences.append(S.build(S.chat_segments(possible, [source, target]), tokenizer, codec.token_dim))
        sequences.append(S.build(S.chat_segments(impossible, [source]), tokenizer, codec.token_dim))
    out = overfit(model, S.collate(sequences, tokenizer.pad_id), steps=300)
    assert out["ce"] < 0.05 and out["mse"] < 0.02, (out["ce"], out["mse"])

    pipeline = Pipeline(model, {}, codec, codec_run)
    for row, image in zip(rows, images):
        said = pipeline.edit(image, row["impossible_edit"]["instruction"])
        assert said == row["impossible_edit"]["reply"], (row["impossible_edit"], said)
        edited = pipeline.edit(image, row["edit"]["instruction"])
        assert not isinstance(edited, str), (row["edit"]["instruction"], edited)
