"""The simplest model of the Shapes world's questions, as a ceiling for the transformer's VQA.

A caption decoder (`models/captioner.py`: causal self-attention over the words, cross-attention to
the image tower's grid) reads a question and is trained on its answer alone, over a run's frozen
tower (`--clip RUN/clip/model`) or a fresh conv tower trained end to end. Every `--every` steps it
answers the questions of `--val` val images greedily, scored exactly per kind. What this model
learns in a few minutes and the transformer does not is the transformer's to learn; what neither
learns is the task's.

python benchmarks/vqa_ceiling.py --clip runs/demo/clip/model --steps 900 --every 300
python benchmarks/vqa_ceiling.py --clip runs/demo/clip/model --oracle --kinds relation,place --steps 3000
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from vlgpt.core.config import LanguageModelConfig, TextConfig, VisionConfig
from vlgpt.core.text_tokenizer import TextTokenizer
from vlgpt.data.images import pixels_from
from vlgpt.data.sources import WorldSource
from vlgpt.eval.probes import tile_index, tiling
from vlgpt.inference.image_codec import ImageCodec
from vlgpt.models.captioner import Captioner
from vlgpt.models.conv_encoder import ConvEncoder
from vlgpt.models.loading import load_clip
from vlgpt.models.transformer import Transformer
from vlgpt.models.vlgpt import tile_positions
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render
from vlgpt.world.scene import COLORS, SHAPES, SIZES, Scene


class SelfReader(torch.nn.Module):
    """Features, question and answer as one causal sequence through the LM's own transformer, as
    VL-GPT reads an image: the features enter once, through a linear projection, and every later
    block sees them as the blocks before have mixed them."""

    def __init__(self, text: TextConfig, image_width: int):
        super().__init__()
        config = LanguageModelConfig(
            width=text.width, depth=text.depth, heads=text.heads, mlp_hidden=344, max_seq_len=160
        )
        self.body = Transformer(config)
        self.project = torch.nn.Linear(image_width, text.width)
        self.embed = torch.nn.Embedding(text.vocab_size, text.width)
        self.head = torch.nn.Linear(text.width, text.vocab_size)

    def logits(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """[B, T, vocab]: position t predicts ids[t] from the features and ids[:t]."""
        n = features.shape[1]
        hidden = self.body(torch.cat([self.project(features), self.embed(ids)], dim=1))
        return self.head(hidden[:, n - 1 : n - 1 + ids.shape[1]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="", help="a CLIP model folder whose tower stays frozen")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=32, help="images a step (all their questions)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--kinds", default="", help="train and score only these kinds, e.g. relation")
    parser.add_argument(
        "--reader",
        default="cross",
        choices=("cross", "self"),
        help="cross: a decoder that cross-attends to the features at every block; self: the "
        "transformer's arrangement, one causal sequence of the projected features, the question and "
        "the answer (models/transformer.py, width 128, --depth blocks)",
    )
    parser.add_argument(
        "--coords",
        type=float,
        default=0.0,
        help="add a fixed 2-D sine map of each cell's place to the grid, at this multiple of the "
        "cells' RMS (0: the tower's own position map only)",
    )
    parser.add_argument(
        "--codec",
        default="",
        help="a run folder: read the N embeddings z its image side makes (what the transformer reads) "
        "instead of a tower's grid",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="read perfect features instead of a tower: each object's shape, colour and size as random "
        "vectors in the cell holding its centre, plus the sine map of places at full strength "
        "(what the reasoning costs when seeing is free)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)

    if args.codec and args.oracle:
        parser.error("--codec reads z: drop --oracle")
    codec = None
    if args.codec:
        codec = ImageCodec.load(args.codec)
        tokenizer, tower = codec.text_tokenizer, codec.clip.vision
    elif args.clip:
        clip, tokenizer = load_clip(args.clip)
        tower = clip.vision.eval().requires_grad_(False)
    else:
        tokenizer = TextTokenizer.train(WorldSource("train", 64).corpus(1000), 1024)
        tower = ConvEncoder(VisionConfig(kind="conv"))
    width = codec.token_dim if codec else tower.config.width
    text = TextConfig(
        vocab_size=tokenizer.vocab_size, context_length=48, width=128, depth=args.depth, heads=4
    )
    decoder = Captioner(text, width, args.depth) if args.reader == "cross" else SelfReader(text, width)
    frozen = bool(args.clip or args.codec or args.oracle)  # else the fresh tower trains end to end
    params = list(decoder.parameters()) + ([] if frozen else list(tower.parameters()))
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    world, val = ShapesWorld("train"), ShapesWorld("val")
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}

    def pairs(rows):
        """(question ids, answer ids + [EOS], image index, kind) for every question of `rows`."""
        out = []
        for j, row in enumerate(rows):
            for qa in row["questions"]:
                if kinds and qa["kind"] not in kinds:
                    continue
                answer = tokenizer.encode(" " + qa["answer"]) + [tokenizer.eos_id]
                out.append((tokenizer.encode(qa["question"]), answer, j, qa["kind"]))
        return out

    cells = tower.config.num_patches
    places = torch.cat([torch.zeros(1, width), tile_positions(cells, width, 1.0)])[None]  # [1, 1+P, w]
    if codec:  # z: N embeddings, each with its home on the tokenizer's raster
        places = tile_positions(codec.num_tokens, width, 1.0)[None]

    attributes = {name: i for i, name in enumerate([*SHAPES, *COLORS, *SIZES])}
    vectors = torch.randn(len(attributes), width)

    def oracle(rows):
        features = places.repeat(len(rows), 1, 1)
        for b, row in enumerate(rows):
            scene = Scene.from_dict(row["scene"])
            for o in scene.objects:
                cell = 1 + tile_index(o.x / scene.width, o.y / scene.height, *tiling(cells))
                features[b, cell] += sum(vectors[attributes[a]] for a in (o.shape, o.color, o.size))
        return features

    def grid(rows):
        if args.oracle:
            return oracle(rows)
        if codec:
            features = codec.encode([render(Scene.from_dict(r["scene"])) for r in rows]).float()
        else:
            features = tower(pixels_from([np.asarray(render(Scene.from_dict(r["scene"]))) for r in rows]))
        if args.coords:
            features = features + args.coords * places * features.detach().pow(2).mean().sqrt()
        return features

    @torch.no_grad()
    def evaluate() -> dict:
        decoder.eval()
        rows = [val[i] for i in range(args.val)]
        features, right = grid(rows), defaultdict(list)
        for question, answer, j, kind in pairs(rows):
            ids = list(question)
            for _ in range(len(answer) + 2):
                logits = decoder.logits(features[j : j + 1], torch.tensor([ids + [0]]))[0, len(ids)]
                token = int(logits.argmax())
                if token == tokenizer.eos_id:
                    break
                ids.append(token)
            said = tokenizer.decode(ids[len(question) :]).strip().lower()
            right[kind].append(said == tokenizer.decode(answer[:-1]).strip().lower())
        decoder.train()
        scores = {kind: round(float(np.mean(v)), 3) for kind, v in sorted(right.items())}
        scores["overall"] = round(float(np.mean([x for v in right.values() for x in v])), 3)
        return scores

    start = time.perf_counter()
    for step in range(args.steps):
        warm, cosine = min(1.0, (step + 1) / 30), 0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * cosine
        rows = [world[step * args.batch + i] for i in range(args.batch)]
        with torch.set_grad_enabled(not frozen):
            features = grid(rows)
        batch = pairs(rows)
        if not batch:  # --kinds asked for none of these images' questions
            continue
        length = max(len(q) + len(a) for q, a, _, _ in batch)
        ids = torch.full((len(batch), length), tokenizer.pad_id)
        scored = torch.zeros(len(batch), length, dtype=torch.bool)
        for i, (question, answer, _, _) in enumerate(batch):
            ids[i, : len(question) + len(answer)] = torch.tensor(question + answer)
            scored[i, len(question) : len(question) + len(answer)] = True
        logits = decoder.logits(features[torch.tensor([j for _, _, j, _ in batch])], ids)
        loss = F.cross_entropy(logits[scored], ids[scored])  # logits[t] predicts ids[t]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % args.every == 0 or step == args.steps - 1:
            seconds = time.perf_counter() - start
            print(
                f"step {step + 1}  images {(step + 1) * args.batch}  train {seconds:.0f} s"
                f"  loss {loss.item():.3f}  VQA {evaluate()}",
                flush=True,
            )
            start = time.perf_counter() - seconds


if __name__ == "__main__":
    main()
