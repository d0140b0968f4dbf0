"""Stage `pretrain`: image-caption pairs both ways (VL-GPT §3.2) and, on the Shapes world, drawings
with their layout plan and interleaved documents (`data/samples.py`). Trains every text token and
every image embedding that follows some text.

Writes RUN/pretrain/model/, which `instruct` continues from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data import sequences as S
from ...data.samples import pair_sample, world_pretrain_sample
from ...data.sources import WORLD, make_source
from .base import register_stage
from .lm import LMStage


@register_stage
class PretrainStage(LMStage):
    """Image-caption pairs both ways and interleaved documents (the Shapes world), or the image-caption
    pairs of a dataset folder or shards (`--data`; both directions, no layouts or documents)."""

    name = "pretrain"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.custom:
            self.source, self.val_source = self.dataset_sources(make_source)

    def sample(self, index: int, part: str = "train") -> tuple[list[S.Segment], list]:
        rng = np.random.default_rng([self.seed, index, 11])
        if self.custom:
            if part == "train":
                return pair_sample(self.source, index, rng, self.uncond_prob)
            return pair_sample(self.val_source, index, rng)
        if part == "val":
            return world_pretrain_sample(self.val_world, index, rng, layout_plan=self.layout_plan)
        return world_pretrain_sample(self.world, index, rng, self.uncond_prob, self.layout_plan)

    def export_meta(self) -> dict:
        # What instruct replays (`--replay`) to keep what pretraining taught: this stage's data, and the
        # part of it held out for validation.
        data = (
            self.data
            if self.data == WORLD or not Path(self.data).exists()
            else str(Path(self.data).resolve())
        )
        return {"pretrain_data": {"data": data, "holdout": self.eval_size if self.val_data is None else 0}}
