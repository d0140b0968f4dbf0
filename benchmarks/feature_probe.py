"""Can an object's shape, colour and size be read from the feature at its place? Linear and MLP probes.

For Shapes scenes, the feature at each object's centre (the ViT patch on the 8 x 8 grid, a finer
ViT grid average-pooled to 8 x 8 first, or the image token on the tokenizer's 4 x 8 tiling) is
fitted to that object's attributes on 80% of the objects and scored on the rest. Features: a CLIP
folder's ViT (`--clip`, repeatable), the run's tuned ViT, and the run's codec output z (what the LM
reads). Chance: shape 1/6, size 1/2.

python benchmarks/feature_probe.py --run runs/demo --clip runs/demo/clip
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from vlgpt.data.images import pixels_from, to_array
from vlgpt.models.loading import load_clip, load_tokenizer_pair, trained_image_side
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.render import render
from vlgpt.world.scene import COLORS, SHAPES, SIZES


def fit(features: torch.Tensor, labels: torch.Tensor, classes: int, hidden: int, train: int) -> float:
    """Held-out accuracy of a linear (hidden = 0) or one-hidden-layer probe trained with Adam."""
    x = (features - features[:train].mean(0)) / (features[:train].std(0) + 1e-5)
    probe = (
        nn.Linear(x.shape[1], classes)
        if not hidden
        else nn.Sequential(nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Linear(hidden, classes))
    )
    optimizer = torch.optim.Adam(probe.parameters(), 3e-3, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(probe(x[:train]), labels[:train]).backward()
        optimizer.step()
    with torch.no_grad():
        return float((probe(x[train:]).argmax(1) == labels[train:]).float().mean())


def on_grid8(features: torch.Tensor) -> torch.Tensor:
    """ViT states [B, 1 + g^2, w] -> [B, 1 + 64, w]: a finer patch grid average-pooled to 8 x 8."""
    g = int(round((features.shape[1] - 1) ** 0.5))
    if g == 8:
        return features
    b, w = features.shape[0], features.shape[2]
    grid = features[:, 1:].transpose(1, 2).reshape(b, w, g, g)
    pooled = nn.functional.adaptive_avg_pool2d(grid, 8).flatten(2).transpose(1, 2)
    return torch.cat([features[:, :1], pooled], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run with a trained codec")
    parser.add_argument("--clip", action="append", default=[], help="a CLIP folder whose ViT to probe")
    parser.add_argument("--images", type=int, default=1500)
    args = parser.parse_args()
    torch.manual_seed(0)
    clip_dir, pair_dir = trained_image_side(args.run)
    tuned, _ = load_clip(clip_dir)
    pair = load_tokenizer_pair(pair_dir)
    towers = {path: load_clip(path)[0] for path in args.clip}
    world, colours = ShapesWorld("train", seed=500000), list(COLORS)
    features: dict[str, list] = {**{f"vit {p}": [] for p in args.clip}, "vit tuned": [], "z": []}
    labels = []
    with torch.no_grad():
        for first in range(0, args.images, 100):
            scenes = [world.scene(i) for i in range(first, first + 100)]
            pixels = pixels_from([to_array(render(s), 64) for s in scenes])
            hidden = {f"vit {p}": on_grid8(t.image_features(pixels)) for p, t in towers.items()}
            hidden["vit tuned"] = tuned.image_features(pixels)
            z = pair.tokenizer(hidden["vit tuned"])
            for j, scene in enumerate(scenes):
                for o in scene.objects:
                    x, y = o.x / scene.width, o.y / scene.height
                    patch = 1 + min(int(y * 8), 7) * 8 + min(int(x * 8), 7)
                    token = min(int(y * 4), 3) * 8 + min(int(x * 8), 7)
                    for name in hidden:
                        features[name].append(hidden[name][j, patch])
                    features["z"].append(z[j, token])
                    labels.append((SHAPES.index(o.shape), colours.index(o.color), SIZES.index(o.size)))
    y = torch.tensor(labels)
    train = int(len(y) * 0.8)
    print(f"{len(y)} objects; accuracy linear / MLP on the held-out 20%")
    for name, rows in features.items():
        x = torch.stack(rows).float()
        scores = [
            f"{what} {fit(x, y[:, a], k, 0, train):.3f} / {fit(x, y[:, a], k, 256, train):.3f}"
            for a, (what, k) in enumerate((("shape", len(SHAPES)), ("colour", len(colours)), ("size", 2)))
        ]
        print(f"{name:40s} " + "   ".join(scores))


if __name__ == "__main__":
    main()
