"""A diffusion decoder alone, on the Shapes world: what it draws from a caption's text, and how exactly
it redraws a scene from its (e_v, e_t), both read by the judge.

    decoder = DiffusersDecoder("runs/world-decoder/diffusion/model")   # or one built in memory
    evaluate_decoder(decoder, n_per_category=50, n_scenes=300)

* `geneval`: GenEval's six categories, each prompt drawn from its own text alone (e_t of "An image of
  a cross to the right of a triangle."; the image condition is the unconditional one), beside
  `noise_floor`, what random pixels score on the same prompts;
* `reconstruction`: validation scenes drawn from their image embedding and caption, judge agreement
  per aspect and `exact` (every object right);
* `seeds`: the first prompts drawn again from another seed: how often the two pictures differ, and
  how often both are right.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.images import pixels_from, to_pil
from ..world.dataset import ShapesWorld
from ..world.judge import compare_scenes, judge
from ..world.scene import Scene
from .geneval import evaluate_t2i, make_prompts, noise_floor, score_prompt

AGREEMENT = ("count", "colors", "shapes", "sizes", "kinds", "positions", "relations", "exact")


def draw_from_text(decoder, texts: list[str], seed: int = 0, steps=None, guidance=None, batch: int = 64):
    """Pictures from each text alone, `batch` at a time (each batch's noise from `seed` + its index)."""
    images = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        z_t = decoder.text_conditions(chunk)
        u_v, _ = decoder.unconditional()
        z_v = None if u_v is None else u_v.expand(len(chunk), *u_v.shape[1:])
        pixels = decoder.decode(z_v, z_t, steps, guidance, seed + start)
        images += [to_pil(x) for x in pixels.float().cpu()]
    return images


def redraw(
    decoder, pixels: torch.Tensor, captions: list[str], seed: int = 0, steps=None, guidance=None, batch=64
):
    """Pictures from each image's embedding (what the adapter reads) and its caption's text states."""
    images = []
    for start in range(0, len(captions), batch):
        z_t = decoder.text_conditions(captions[start : start + batch])
        z_v = decoder.image_conditions(pixels[start : start + batch])
        images += [to_pil(x) for x in decoder.decode(z_v, z_t, steps, guidance, seed + start).float().cpu()]
    return images


def agreement(results: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in results])) for k in AGREEMENT} | {"n": len(results)}


@torch.no_grad()
def evaluate_decoder(
    decoder,
    n_per_category: int = 10,
    n_scenes: int = 60,
    size: int = 64,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    n_seeds: int = 12,
) -> dict:
    prompts = make_prompts(n_per_category, width=size, height=size)
    drawn = draw_from_text(decoder, [p.prompt for p in prompts], seed, steps, guidance)
    by_prompt = {id(p): image for p, image in zip(prompts, drawn)}
    result = {
        "geneval": evaluate_t2i(lambda p: by_prompt[id(p)], judge, prompts),
        "noise_floor": noise_floor(judge, prompts),
    }
    if n_scenes:
        val = ShapesWorld("val", size, size)
        rows = [val[i] for i in range(n_scenes)]
        pixels = pixels_from([np.asarray(val.image(row)) for row in rows])
        redrawn = redraw(decoder, pixels, [row["caption"] for row in rows], seed, steps, guidance)
        result["reconstruction"] = agreement(
            [compare_scenes(judge(image), Scene.from_dict(row["scene"])) for image, row in zip(redrawn, rows)]
        )
    if n_seeds:
        again = draw_from_text(decoder, [p.prompt for p in prompts[:n_seeds]], seed + 1, steps, guidance)
        differ, both = [], []
        for prompt, first, second in zip(prompts, drawn, again):
            gap = (
                np.abs(np.asarray(first, dtype=np.float32) - np.asarray(second, dtype=np.float32)).mean()
                / 255
            )
            differ.append(float(gap > 0.01))
            both.append(score_prompt(prompt, judge(first)) * score_prompt(prompt, judge(second)))
        result["seeds"] = {"differ": float(np.mean(differ)), "both_right": float(np.mean(both)), "n": n_seeds}
    return result


def headline(result: dict) -> dict:
    """The figures a curve plots: GenEval overall and by category, the floor, reconstruction."""
    figures = {f"geneval_{k}": v["mean"] for k, v in result["geneval"].items() if isinstance(v, dict)}
    figures["noise_floor"] = result["noise_floor"]["mean"]
    for k, v in result.get("reconstruction", {}).items():
        if k != "n":
            figures[f"recon_{k}"] = v
    for k, v in result.get("seeds", {}).items():
        if k != "n":
            figures[f"seeds_{k}"] = v
    return figures
