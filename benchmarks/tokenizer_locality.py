"""Does the tokenizer's locality bias help? Train the tokenizer-detokenizer with and without it, side
by side, from the same CLIP, seed and batches, and report how well z_v matches e_v on the grid
cells that hold objects and on the background.

    python benchmarks/tokenizer_locality.py --clip runs/demo/clip --steps 100

Prints one JSON line per setting: MSE(z_v, e_v) overall, on the pooled token, on cells with an
object, on background cells, and the share of e_v's variance explained on object cells.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from vlgpt.core.config import ImageTokenizerConfig, TokenizerPairConfig
from vlgpt.data.images import pixels_from
from vlgpt.models.loading import load_clip
from vlgpt.models.pixel_decoder import foreground
from vlgpt.models.tokenizer_pair import TokenizerPair
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render


def batch(world: ShapesWorld, start: int, n: int) -> torch.Tensor:
    return pixels_from([np.asarray(render(world.scene(i))) for i in range(start, start + n)])


def run(clip, config: ImageTokenizerConfig, steps: int, batch_size: int, lr: float, val: dict) -> dict:
    torch.manual_seed(0)
    c = clip.config
    pair = TokenizerPair(TokenizerPairConfig.for_clip(config, c))
    optimizer = torch.optim.AdamW(pair.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    world = ShapesWorld("train")
    start = time.perf_counter()
    for step in range(steps):
        scale = min(1.0, (step + 1) / 30) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        pixels = batch(world, step * batch_size, batch_size)
        with torch.no_grad():
            features = clip.image_features(pixels)
            e_v = clip.image_embeddings(pixels, features)
        z_v, _ = pair.detokenizer(pair.tokenizer(features))
        loss = F.mse_loss(z_v, e_v)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pair.parameters(), 1.0)
        optimizer.step()
    pair.eval()
    with torch.no_grad():
        z_v, _ = pair.detokenizer(pair.tokenizer(val["features"]))
    err = ((z_v - val["e_v"]) ** 2).mean(-1)  # [B, 1 + G^2]
    cells, objects = err[:, 1:], val["object_cells"]
    variance = val["cell_variance"]
    return {
        "locality": config.locality,
        "steps": steps,
        "mse_v": err.mean().item(),
        "mse_pooled": err[:, 0].mean().item(),
        "mse_object_cells": cells[objects].mean().item(),
        "mse_background_cells": cells[~objects].mean().item(),
        "object_variance_explained": 1 - cells[objects].mean().item() / variance,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", required=True, help="a trained CLIP model folder (RUN/clip or RUN)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clip, _ = load_clip(args.clip)
    grid = clip.config.condition_grid
    pixels = batch(ShapesWorld("val"), 0, 256)
    with torch.no_grad():
        features = clip.image_features(pixels)
        e_v = clip.image_embeddings(pixels, features)
    objects = (
        F.adaptive_max_pool2d(foreground(pixels), grid).flatten(1) > 0.5
    )  # [B, G^2]: cells with an object
    cell_variance = e_v[:, 1:][objects].var(dim=0).mean().item()  # per-dimension variance across object cells
    val = {"features": features, "e_v": e_v, "object_cells": objects, "cell_variance": cell_variance}
    for locality in (False, True):
        config = dataclasses.replace(ImageTokenizerConfig(), locality=locality)
        result = run(clip, config, args.steps, args.batch_size, args.lr, val)
        print(
            json.dumps(
                {
                    "benchmark": "tokenizer_locality",
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
