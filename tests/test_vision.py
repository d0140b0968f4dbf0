"""The vision stage's objective makes shape readable: a tiny conv tower trained by the clip stage's
loss (InfoNCE beside captioning) on one-object scenes lets a linear probe read each object's shape
from the cell under it far above chance and far above the same tower untrained (random
convolutions already separate some shapes, so "above chance" alone would prove nothing)."""

import dataclasses

import numpy as np
import torch

from vlgpt.core.presets import PRESETS
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data.images import pixels_from
from vlgpt.eval.probes import object_rows, probe_objects
from vlgpt.models.clip import CLIP
from vlgpt.world.render import render
from vlgpt.world.scene import SHAPES, SIZES, compose


def one_object_scenes(n: int, seed: int):
    """Red shapes of either size on a 32 x 32 canvas: shape is what a caption must read."""
    rng = np.random.default_rng(seed)
    picks = [(SHAPES[rng.integers(len(SHAPES))], "red", SIZES[rng.integers(len(SIZES))]) for _ in range(n)]
    return [compose([pick], width=32, height=32, seed=seed * 100_000 + i) for i, pick in enumerate(picks)]


def caption(scene) -> str:
    o = scene.objects[0]
    return f"a {o.size} {o.color} {o.shape}."


def test_the_vision_objective_makes_shape_linearly_readable():
    torch.manual_seed(0)
    tokenizer = TextTokenizer.train(
        [f"a {size} red {shape}." for shape in SHAPES for size in SIZES] * 20, 300
    )
    tiny = PRESETS["tiny"].model.clip  # conv tower, InfoNCE + a one-block caption decoder
    config = dataclasses.replace(
        tiny,
        vision=dataclasses.replace(tiny.vision, width=64, patch_size=4),
        text=dataclasses.replace(tiny.text, vocab_size=tokenizer.vocab_size),
        embed_dim=64,
    )
    assert config.vision.kind == "conv" and config.caption_weight > 0
    clip = CLIP(config)
    held_out = one_object_scenes(300, seed=999)

    def shape_probe() -> float:
        clip.eval()
        rows = object_rows(lambda pixels: clip.image_features(pixels)[:, 1:], held_out)
        clip.train()
        return probe_objects(*rows)["shape"]

    before = shape_probe()
    optimizer = torch.optim.AdamW(clip.parameters(), lr=3e-3)
    for step in range(800):
        scenes = one_object_scenes(32, seed=step)
        pixels = pixels_from([np.asarray(render(s)) for s in scenes])
        ids, lengths = tokenizer.batch([caption(s) for s in scenes], config.text.context_length)
        loss = clip(pixels, ids, lengths)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = shape_probe()
    chance = 1 / len(SHAPES)
    assert after > max(3 * chance, before + 0.3), (before, after)
