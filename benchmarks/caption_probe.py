"""How fast does a VL-GPT transformer learn to read images? Captions only, one lever at a time.

Trains a fresh transformer of the small preset's shape on Shapes image -> caption pairs alone and
scores greedy captions of 100 val images by attribute F1 (and, per attribute, the F1 of the colour,
shape and size words a caption names, and how often it names the right number of objects). What it
reads is chosen by `--reader`:

  z           the run's frozen codec (image tokenizer output), what the demo's LM reads
  tune        the same, from a copy of the codec's encoder side (tuned ViT + image tokenizer) that
              the caption loss fine-tunes
  vit:CLIP    a CLIP folder's frozen ViT patches, two vertically adjacent patches a token (the
              tokenizer's own space-to-depth tiling), e.g. RUN/clip or RUN/decoder/model/clip

python benchmarks/caption_probe.py --run runs/demo --reader z --steps 800
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
from vlgpt.data import sequences as S
from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig
from vlgpt.inference.image_codec import ImageCodec
from vlgpt.models.loading import load_clip
from vlgpt.models.vlgpt import VLGPT
from vlgpt.world import language
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render


def set_f1(predicted: list, truth: list) -> float:
    a, b = Counter(predicted), Counter(truth)
    both = sum((a & b).values())
    return 2 * both / (sum(a.values()) + sum(b.values())) if a or b else 1.0


def vit_reader(clip):
    """CLIP ViT patches [B, 1 + 64, w] -> [B, 32, 2w]: two vertically adjacent patches a token."""
    w, g = clip.config.vision.width, clip.config.vision.grid

    def read(features: torch.Tensor) -> torch.Tensor:
        b = features.shape[0]
        grid = features[:, 1:].reshape(b, g // 2, 2, g, w).permute(0, 1, 3, 2, 4)
        return grid.reshape(b, g * g // 2, 2 * w)

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run with a trained codec (clip, tokenizer, decoder)")
    parser.add_argument("--reader", default="z", help="z | tune | vit:CLIP_FOLDER")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=int, default=256, help="transformer width (MLP 688/256 of it)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--encoder-lr", type=float, default=3e-4, help="--reader tune: the encoder's lr")
    parser.add_argument(
        "--image-modeling", action="store_true", help="also regress each image embedding from those before it"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer's forward")
    parser.add_argument("--val", type=int, default=100, help="val images captioned at the end")
    args = parser.parse_args()

    torch.manual_seed(0)
    codec = ImageCodec.load(args.run)
    text_tokenizer = codec.text_tokenizer
    encoder, reader, dim = codec.clip, codec.pair.tokenizer, codec.token_dim
    trained = []
    if args.reader == "tune":
        encoder, reader = copy.deepcopy(codec.clip), copy.deepcopy(codec.pair.tokenizer)
        for module in (encoder, reader):
            module.train().requires_grad_(True)
        trained = list(encoder.vision.parameters()) + list(reader.parameters())
    elif args.reader.startswith("vit:"):
        encoder, _ = load_clip(Path(args.reader[4:]))
        reader, dim = vit_reader(encoder), 2 * encoder.config.vision.width
    elif args.reader != "z":
        parser.error(f"unknown --reader {args.reader!r}; use z, tune or vit:CLIP_FOLDER")
    lm = LanguageModelConfig(
        width=args.width, depth=args.depth, heads=4, mlp_hidden=args.width * 688 // 256, max_seq_len=384
    )
    model = VLGPT(VLGPTConfig(text_tokenizer.vocab_size, codec.num_tokens, dim, lm))
    forward = torch.compile(model, dynamic=True) if args.compile else model
    groups = [{"params": model.parameters(), "lr": args.lr}]
    if trained:
        groups.append({"params": trained, "lr": args.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.05, betas=(0.9, 0.98))
    peaks = [g["lr"] for g in optimizer.param_groups]
    world, val = ShapesWorld("train", 64, 64), ShapesWorld("val", 64, 64)

    def encode(scenes, grad: bool) -> torch.Tensor:
        pixels = codec.pixels([np.asarray(render(s)) for s in scenes])
        with torch.set_grad_enabled(grad):
            return reader(encoder.image_features(pixels))

    start = time.perf_counter()
    for step in range(args.steps):
        factor = min(1, (step + 1) / 30) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * factor
        rng = np.random.default_rng([0, step])
        scenes = [world.scene(step * args.batch + i) for i in range(args.batch)]
        captions = [language.captions(s, rng)[0] for s in scenes]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = encode(scenes, bool(trained))
            blank = torch.zeros(codec.num_tokens, dim)
            batch = S.collate(
                [
                    S.build(
                        [S.image(blank, args.image_modeling), S.text(c, True), S.eos()], text_tokenizer, dim
                    )
                    for c in captions
                ],
                text_tokenizer.pad_id,
            )
            embeds = batch["image_embeds"].to(z.dtype).clone()
            embeds[batch["is_image"]] = z.reshape(-1, dim)
            batch["image_embeds"] = embeds
            if args.image_modeling:  # position t regresses the embedding at t + 1
                targets = torch.zeros_like(embeds)
                targets[:, :-1] = embeds[:, 1:]
                batch["image_targets"] = targets.detach().float()
            out = forward(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        if step == 20:
            warm = time.perf_counter()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} caption ce {float(out['ce']):.3f} ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    per_step = (time.perf_counter() - warm) / max(args.steps - 21, 1) if args.steps > 21 else seconds

    model.eval()
    generator = InterleavedGenerator(model, text_tokenizer, codec)
    generator.dim = dim
    scenes = [val.scene(i) for i in range(args.val)]
    with torch.no_grad():
        z = encode(scenes, False).float()
    f1, parts = [], {"count": [], "color": [], "shape": [], "size": []}
    for scene, embeddings in zip(scenes, z):
        text = generator.generate([S.image(embeddings)], SamplingConfig(max_new_tokens=40)).text
        f1.append(language.caption_attribute_scores(text, scene)["f1"])
        named = language.parse_caption(text)
        parts["count"].append(float(len(named) == len(scene.objects)))
        for attribute in ("color", "shape", "size"):
            said = [getattr(o, attribute) for o in named if getattr(o, attribute)]
            parts[attribute].append(set_f1(said, [getattr(o, attribute) for o in scene.objects]))
    print(
        f"reader {args.reader}  steps {args.steps} x {args.batch}  width {args.width}  train {seconds:.0f} s "
        f"({per_step:.4f} s/step)  caption F1 {np.mean(f1):.3f}  "
        + "  ".join(f"{k} {np.mean(v):.3f}" for k, v in parts.items())
    )


if __name__ == "__main__":
    main()
