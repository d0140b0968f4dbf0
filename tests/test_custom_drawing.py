"""Data that is not the Shapes world, trained through the CLI only: the model draws what a caption
says — judged by a classifier trained on the dataset's own images — and instruction tuning on that
dataset's conversations, which never draw, keeps it (issue 12: "instruct must keep what
pretraining taught")."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "yellow": (235, 215, 50)}
CLASSES = [(a, b, v) for a in COLORS for b in COLORS if a != b for v in (True, False)]  # 12


def caption(a: str, b: str, vertical: bool) -> str:
    return f"{a} left and {b} right." if vertical else f"{a} top and {b} bottom."


def halves(a: str, b: str, vertical: bool, rng, size: int = 32) -> Image.Image:
    """Two colours split down the middle (left | right) or across it (top / bottom), lightly jittered."""
    image = np.zeros((size, size, 3), np.float32)
    first, second = (
        (np.s_[:, : size // 2], np.s_[:, size // 2 :])
        if vertical
        else (
            np.s_[: size // 2],
            np.s_[size // 2 :],
        )
    )
    image[first], image[second] = COLORS[a], COLORS[b]
    image += rng.normal(0, 6, image.shape)
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def features(image) -> np.ndarray:
    """8 x 8 mean-pooled RGB: what the nearest-centroid classifier reads."""
    pixels = np.asarray(image.convert("RGB").resize((32, 32)), np.float32) / 255
    return pixels.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3)).ravel()


def vlgpt(*args):
    result = subprocess.run(
        [sys.executable, "-m", "vlgpt", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def halves_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("halves")
    rng = np.random.default_rng(0)
    folder = root / "captions" / "train"
    folder.mkdir(parents=True)
    rows, entries, centroids = [], [], {c: [] for c in CLASSES}
    for i in range(96):
        a, b, vertical = CLASSES[i % len(CLASSES)]
        image = halves(a, b, vertical, rng)
        image.save(folder / f"{i:03d}.png")
        centroids[(a, b, vertical)].append(features(image))
        rows.append({"file_name": f"{i:03d}.png", "text": caption(a, b, vertical)})
        side = "left" if vertical else "top"
        entries.append(
            {
                "id": f"h{i}",
                "image": f"train/{i:03d}.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\nWhat colour is the {side} half?"},
                    {"from": "gpt", "value": a},
                    {"from": "human", "value": "Describe the image."},
                    {"from": "gpt", "value": caption(a, b, vertical)},
                ],
            }
        )
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = root / "chat"
    chat.mkdir()
    (chat / "train").symlink_to(folder)
    (chat / "llava.json").write_text(json.dumps(entries))
    run = root / "run"
    common = ["--preset", "tiny", "--out", run, "--save-every", "0", "--eval-size", "8", "--lr", "3e-3"]
    captions = root / "captions"
    LM = ["--set", "lm.width=64", "--set", "lm.depth=2", "--set", "lm.mlp_hidden=128"]
    vlgpt("train", "clip", "--data", captions, "--steps", "120", *common)
    vlgpt("train", "tokenizer", "--data", captions, "--steps", "30", *common)
    vlgpt("train", "decoder", "--data", captions, "--steps", "120", *common)
    vlgpt("train", "pretrain", "--data", captions, "--steps", "300", *LM, *common)
    pretrained = root / "pretrain-copy"
    shutil.copytree(run / "pretrain" / "model", pretrained)
    vlgpt("train", "instruct", "--data", chat, "--steps", "120", *common)
    centre = {c: np.mean(v, axis=0) for c, v in centroids.items()}
    return run, pretrained, centre


def draw_accuracy(model_dir, run, centre) -> float:
    """Share of the 12 captions whose drawing the nearest-centroid classifier assigns to that caption."""
    from vlgpt.core.prompts import t2i_prompt
    from vlgpt.data import sequences as S
    from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig
    from vlgpt.inference.image_codec import ImageCodec
    from vlgpt.models.loading import load_vlgpt

    model, _, _ = load_vlgpt(model_dir)
    codec = ImageCodec.load(run)
    generator = InterleavedGenerator(model, codec.text_tokenizer, codec)
    names, matrix = list(centre), np.stack(list(centre.values()))
    hits = []
    for cls in CLASSES:
        segments = [S.text(t2i_prompt(caption(*cls)))]
        torch.manual_seed(0)
        image = generator.generate(
            segments, SamplingConfig(), require_image=True, stop_after_image=True
        ).images[0]
        guess = names[int(np.argmin(((matrix - features(image)) ** 2).sum(axis=1)))]
        hits.append(guess == cls)
    return float(np.mean(hits))


def test_a_custom_dataset_draws_its_captions_and_instruct_keeps_drawing(halves_run):
    run, pretrained, centre = halves_run
    after_pretrain = draw_accuracy(pretrained, run, centre)
    after_instruct = draw_accuracy(run / "instruct" / "model", run, centre)
    chance = 1 / len(CLASSES)
    assert after_pretrain >= 0.6, after_pretrain  # chance is 1/12; measured 0.83
    # measured: 0.83 -> 0.83 with the default --replay 0.25, 0.83 -> 0.42 with --replay 0
    assert after_instruct >= after_pretrain - 2 * chance, (after_pretrain, after_instruct)


def test_held_out_images_are_captioned_and_answered_far_above_chance(halves_run):
    import vlgpt as package

    run, _, _ = halves_run
    model = package.load(run)
    rng = np.random.default_rng(1)  # new draws of the noise: images the run never saw
    answers, captions = [], []
    for a, b, vertical in CLASSES * 2:
        image = halves(a, b, vertical, rng)
        side = "left" if vertical else "top"
        answer = model.ask(image, f"What colour is the {side} half?", max_new_tokens=4)
        answers.append(answer.strip().rstrip(".").lower() == a)
        words = model.caption(image, max_new_tokens=12).replace(".", " ").split()
        named = [w for w in words if w in COLORS]
        captions.append(named[:1] == [a] and named[-1:] == [b] and ("left" in words) == vertical)
    # measured: answers 1.0, captions 0.83 (both colours in order and the split named right)
    assert np.mean(answers) >= 0.7, answers  # chance: 1/3
    assert np.mean(captions) >= 0.5, captions  # chance: 1/12, exact caption
