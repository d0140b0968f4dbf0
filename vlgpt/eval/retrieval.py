"""Image-text retrieval R@1, the CLIP stage's and the reconstruction report's measure."""

from __future__ import annotations

import torch


def group_ids(groups: list[str]) -> torch.Tensor:
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(g, len(index)) for g in groups])


def retrieval_r1(image_emb: torch.Tensor, text_emb: torch.Tensor, groups: list[str]) -> dict[str, float]:
    """R@1 both ways; a retrieved item counts when it says the same as the query (same group)."""
    ids = group_ids(groups)
    sims = image_emb @ text_emb.T
    i2t = (ids[sims.argmax(1)] == ids).float().mean().item()
    t2i = (ids[sims.argmax(0)] == ids).float().mean().item()
    return {"image_to_text_r1": i2t, "text_to_image_r1": t2i}
