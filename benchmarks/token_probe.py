"""Does each link of the image chain keep what the tower saw? Per-object linear probes of shape,
colour, size and place (`vlgpt.eval.probes`) on the tower's grid, on e_v (its projected patch
tokens, the detokenizer's target), on z (the N image embeddings the image tokenizer makes), on z_v
(the detokenizer's reconstruction of e_v from z) and on the z the transformer reads: made by the
decoder stage's tuned copies of the tower and tokenizer, where `decoder.train_codec` made them.

Chance: shape 1/6, colour 1/10, size 1/2, place 1/2. The scenes are training-split scenes from a
seed range no stage samples in the demo's budget, so no row was fitted by the chain.

python benchmarks/token_probe.py --run runs/demo [--scenes 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vlgpt.data.images import pixels_from
from vlgpt.eval.probes import linear_probe, object_rows, probe_objects, tile_index
from vlgpt.inference.image_codec import ImageCodec
from vlgpt.models.loading import load_clip, load_tokenizer_pair
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder with clip/ and tokenizer/")
    parser.add_argument("--scenes", type=int, default=1000)
    args = parser.parse_args()
    run = Path(args.run)
    clip, _ = load_clip(run / "clip" / "model")
    clip.eval()
    world = ShapesWorld("train", seed=500_000)
    scenes = [world.scene(i) for i in range(args.scenes)]
    links = {
        "tower grid": lambda p: clip.image_features(p)[:, 1:],
        "e_v": lambda p: clip.image_embeddings(p)[:, 1:],
    }
    if (run / "tokenizer" / "model").is_dir():
        pair = load_tokenizer_pair(run / "tokenizer" / "model").eval()
        links["z"] = lambda p: pair.tokenizer(clip.image_features(p))
        links["z_v"] = lambda p: pair.detokenizer(pair.tokenizer(clip.image_features(p)))[0][:, 1:]
    if (run / "decoder" / "model" / "tokenizer").is_dir():  # decoder.train_codec: the tuned copies
        codec = ImageCodec.load(run)
        links["z, tuned (read by the LM)"] = lambda p: codec.pair.tokenizer(codec.clip.image_features(p))
    result = {}
    for name, encode in links.items():
        rows = object_rows(encode, scenes)  # features without gradients; the probes fit their own
        result[name] = {k: round(v, 3) for k, v in probe_objects(*rows).items()}
        print(f"{name:>26}: {result[name]}  ({len(rows[1])} objects)", flush=True)
    result["tower grid: where"] = where_probe(clip, scenes[:600])
    print(f"{'tower grid: where':>26}: {result['tower grid: where']}", flush=True)
    print(json.dumps({"benchmark": "token_probe", "run": str(run), **result}))


def where_probe(clip, scenes) -> dict:
    """Can the column and row of the cell under an object (8 classes each on the 8 x 8 grid) be read
    from that cell's feature? A relation question needs this absolute place; `place` above only
    asks which half of its own cell the object sits in. Also the RMS of the tower's position map
    against that of its cells, when it has one."""
    g = clip.config.vision.grid
    with torch.no_grad():
        grid = clip.image_features(pixels_from([np.asarray(render(s)) for s in scenes]))[:, 1:]
    features, columns, rows = [], [], []
    for j, scene in enumerate(scenes):
        for o in scene.objects:
            cell = tile_index(o.x / scene.width, o.y / scene.height, g, g)
            features.append(grid[j, cell])
            columns.append(cell % g)
            rows.append(cell // g)
    x, train = torch.stack(features), int(len(features) * 0.7)
    out = {
        "column": round(linear_probe(x, torch.tensor(columns), g, train), 3),
        "row": round(linear_probe(x, torch.tensor(rows), g, train), 3),
        "cell_rms": round(float(grid.pow(2).mean().sqrt()), 3),
    }
    position = getattr(clip.vision, "pos_embed", None)
    if position is not None:
        out["position_map_rms"] = round(float(position.pow(2).mean().sqrt()), 3)
    return out


if __name__ == "__main__":
    main()
