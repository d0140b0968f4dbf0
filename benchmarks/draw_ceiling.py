"""A ceiling for the image head: the simplest model of "layout plan -> the image's N embeddings".

    python benchmarks/draw_ceiling.py --run runs/demo --train 32000 --steps 3000 --mode queries
    python benchmarks/draw_ceiling.py --run runs/demo --train 96000 --steps 9000 --mode queries

VL-GPT draws by regressing the N image embeddings after the text, with the same transformer that
reads. This benchmark trains, beside the project, the plainest model of the same mapping at the
LM's width and depth: the plan's tokens, then N image places, through one transformer, MSE onto the
run's codec's z (`--train` scenes encoded once; `--cache` keeps them). No caption, no reading: if
this cannot draw the plans within the budget's samples, no head on the LM can; if it can, the LM's
way of drawing is what costs. `--mode` lays the places out as VL-GPT does (`next`: each reads the
embedding before it, fed back when drawing), as learned queries under a causal mask (`queries`,
what `lm.draw=queries` builds) or with every position seeing every other (`parallel`). `--grid`
changes the plan's cells, `--whiten` regresses ZCA-whitened z. Every `--eval-every` steps `--n`
validation scenes are drawn from their plans, decoded by the run's decoder and judged against the
scene (as benchmarks/draw_given_plan.py), beside the codec's own redraw of them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from draw_given_plan import ASPECTS, agreement
from torch import nn

from vlgpt.inference.image_codec import ImageCodec
from vlgpt.inference.pipeline import load
from vlgpt.world import language
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.render import render


class PlanToImage(nn.Module):
    """Plan tokens, then N image places, through one transformer of the LM's width and depth.

    mode "parallel": the places are N learned queries, every position sees every other;
    "queries": the same queries under the LM's causal mask (place k sees the plan and places < k);
    "next": the LM's own way (VL-GPT §3.2): causal, place k's input is the embedding of place k - 1
    (a start vector for the first), teacher-forced in training and fed back when drawing.
    """

    def __init__(
        self, vocab: int, n: int, dim: int, mode: str, width: int = 128, depth: int = 4, heads: int = 4
    ):
        super().__init__()
        self.mode = mode
        self.embed = nn.Embedding(vocab, width)
        self.text_pos = nn.Parameter(torch.randn(128, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(n, width) * 0.02)  # learned queries, or place embeddings
        self.z_in = nn.Linear(dim, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        b, t = ids.shape
        n = len(self.queries)
        places = self.queries.expand(b, -1, -1)
        if self.mode == "next":  # place k reads the embedding of place k - 1
            shifted = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
            places = places + self.z_in(shifted) * (torch.arange(n) > 0)[None, :, None]
        x = torch.cat([self.embed(ids) + self.text_pos[:t], places], dim=1)
        keys_pad = torch.cat([pad, torch.zeros(b, n, dtype=torch.bool)], dim=1)
        causal = None
        if self.mode != "parallel":
            causal = torch.triu(torch.full((t + n, t + n), float("-inf")), diagonal=1)
        h = self.body(x, mask=causal, src_key_padding_mask=keys_pad)
        return self.out(self.norm(h[:, t:]))

    @torch.no_grad()
    def draw(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        if self.mode != "next":
            return self(ids, pad)
        z = torch.zeros(len(ids), len(self.queries), self.out.out_features)
        for k in range(len(self.queries)):  # each prediction fed back as the next place's input
            z[:, k] = self(ids, pad, z)[:, k]
        return z


def plans(tokenizer, scenes) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer.encode(" " + language.layout(s)) for s in scenes]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    pad = torch.ones(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        pad[i, : len(r)] = False
    return ids, pad


@torch.no_grad()
def encode_scenes(codec: ImageCodec, scenes, batch: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            codec.encode([render(s) for s in scenes[i : i + batch]]).float()
            for i in range(0, len(scenes), batch)
        ]
    )


def judged(codec, z: torch.Tensor, scenes) -> dict[str, float]:
    return agreement([compare_scenes(judge(im), s) for im, s in zip(codec.decode(z), scenes)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a run with clip, tokenizer, decoder and an LM stage")
    parser.add_argument("--train", type=int, default=16000, help="training scenes (z encoded once)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--n", type=int, default=100, help="validation scenes judged")
    parser.add_argument("--mode", choices=("parallel", "queries", "next"), default="parallel")
    parser.add_argument(
        "--width", type=int, default=128, help="the model's width (the small preset LM's: 128)"
    )
    parser.add_argument("--depth", type=int, default=4, help="its blocks (the small preset LM's: 4)")
    parser.add_argument(
        "--grid", type=int, default=language.LAYOUT_GRID, help="layout plan cells a side (the world's: 16)"
    )
    parser.add_argument(
        "--whiten", action="store_true", help="regress ZCA-whitened z (every direction at unit variance)"
    )
    parser.add_argument("--cache", default=None, help="a .pt file to keep the encoded z in between runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    language.LAYOUT_GRID = args.grid  # what layout() writes
    pipe = load(Path(args.run))
    codec = pipe.codec
    size = codec.image_size
    train_world, val_world = ShapesWorld("train", size, size), ShapesWorld("val", size, size)
    train = [train_world.scene(i) for i in range(args.train)]
    val = [val_world.scene(i) for i in range(args.n)]
    start = time.perf_counter()
    if args.cache and Path(args.cache).is_file():
        z = torch.load(args.cache, weights_only=True)
    else:
        z = encode_scenes(codec, train)
        if args.cache:
            torch.save(z, args.cache)
    print(f"z of {len(train)} scenes: {time.perf_counter() - start:.0f} s; rms {z.pow(2).mean().sqrt():.3f}")
    unwhiten = lambda w: w  # noqa: E731
    if args.whiten:  # MSE in a space where a quiet direction (shape) weighs what a loud one (colour) does
        flat = z.reshape(-1, z.shape[-1])
        mean = flat.mean(0)
        values, vectors = torch.linalg.eigh(torch.cov(flat.T))
        values = values.clamp(min=1e-4 * float(values.max()))
        forward = vectors @ torch.diag(values.rsqrt()) @ vectors.T
        backward = vectors @ torch.diag(values.sqrt()) @ vectors.T
        z = (z - mean) @ forward
        unwhiten = lambda w: w @ backward + mean  # noqa: E731
    ids, pad = plans(pipe.tokenizer, train)
    val_ids, val_pad = plans(pipe.tokenizer, val)
    model = PlanToImage(
        pipe.tokenizer.vocab_size, z.shape[1], z.shape[2], args.mode, width=args.width, depth=args.depth
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * s / args.steps)))
    )
    print(f"{'step':>6s} {'samples':>8s} {'mse':>7s}" + "".join(f"{a:>10s}" for a in ASPECTS))
    print(
        f"{'codec':>6s} {'':>8s} {'':>7s}"
        + "".join(f"{v:10.2f}" for v in judged(codec, encode_scenes(codec, val), val).values())
    )
    generator = torch.Generator().manual_seed(0)
    start, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        pick = torch.randint(len(train), (args.batch_size,), generator=generator)
        loss = F.mse_loss(model(ids[pick], pad[pick], z[pick]), z[pick])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                figures = judged(codec, unwhiten(model.draw(val_ids, val_pad)), val)
            model.train()
            print(
                f"{step:6d} {step * args.batch_size:8d} {np.mean(losses[-50:]):7.4f}"
                + "".join(f"{v:10.2f}" for v in figures.values())
                + f"   {time.perf_counter() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
