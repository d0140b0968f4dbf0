"""`vlgpt eval reconstruction`: how much of a scene survives image -> N embeddings -> image.

The judge reads the source scene and the reconstruction; agreement is reported per aspect
(count, colours, shapes, sizes, colour-shape bindings, relations, exact), each with a bootstrap
95% CI, beside CLIP's zero-shot retrieval R@1 in both directions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..inference.image_codec import ImageCodec
from ..models.loading import load_clip
from ..world.dataset import ShapesWorld
from ..world.judge import compare_scenes, judge
from ..world.render import render, render_grid
from .retrieval import retrieval_r1
from .text_metrics import summarize

ASPECTS = ("count", "colors", "shapes", "sizes", "kinds", "relations", "exact")


def evaluate_reconstruction(
    run: str | Path,
    n: int = 500,
    split: str = "val",
    batch_size: int = 100,
    grid_path: Path | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
) -> dict:
    codec = ImageCodec.load(run, device, dtype)
    size = codec.image_size
    world = ShapesWorld(split, size, size)
    scenes = [world.scene(i) for i in range(n)]
    results, pairs = [], []
    for start in range(0, n, batch_size):
        chunk = scenes[start : start + batch_size]
        sources = [render(s) for s in chunk]
        outputs = codec.reconstruct(sources)
        results += [compare_scenes(judge(out), scene) for out, scene in zip(outputs, chunk)]
        if len(pairs) < 32:
            pairs += [im for pair in zip(sources, outputs) for im in pair][: 2 * (16 - len(pairs) // 2)]
    metrics = {f"judge_{a}": summarize([float(r[a]) for r in results]) for a in ASPECTS}
    metrics.update(_retrieval(codec, world, n, Path(run)))
    if grid_path is not None:
        render_grid(pairs, columns=8, scale=2).save(grid_path)
        metrics["grid"] = str(grid_path)
    return metrics


@torch.no_grad()
def _retrieval(codec: ImageCodec, world: ShapesWorld, n: int, run: Path) -> dict:
    from ..data.sources import WorldSource

    source = WorldSource(world.split, world.width, world.seed)
    items = [source.get(i) for i in range(n)]
    pixels = codec.pixels([a for a, _, _ in items])
    ids, lengths = codec.text_tokenizer.batch([c for _, c, _ in items], codec.clip.config.text.context_length)
    # the contrastive CLIP itself, not the codec's end-to-end tuned encoder
    clip, _ = load_clip(run, codec.device, codec.dtype)
    ids, lengths = ids.to(codec.device), lengths.to(codec.device)
    image = torch.cat([clip.encode_image(pixels[i : i + 100]) for i in range(0, n, 100)]).float().cpu()
    text = torch.cat([clip.encode_text(ids[i : i + 100], lengths[i : i + 100]) for i in range(0, n, 100)])
    text = text.float().cpu()
    return {k: float(v) for k, v in retrieval_r1(image, text, [g for _, _, g in items]).items()}
