"""Stage `instruct`: instruction tuning (VL-GPT §3.2), assistant turns only, from the pretrain
stage's model (with LoRA where the recipe asks). On the Shapes world: look, draw, edit and few-shot
conversations (`data/samples.py`); on a dataset folder: its conversations (LLaVA JSON) or its
captions as chats; `--replay` mixes pretraining pairs back in.

Writes RUN/instruct/model/, the model `vlgpt.load(RUN)` answers with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.checkpoint import read_config
from ...core.config import ConfigError
from ...data import sequences as S
from ...data.conversations import ConversationSource
from ...data.formats import DatasetError
from ...data.samples import INSTRUCT_KINDS, pair_sample, world_instruct_sample, world_pretrain_sample
from ...data.sources import WORLD, make_source
from .base import StageInputs, register_stage
from .lm import LMStage


@register_stage
class InstructStage(LMStage):
    name = "instruct"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return super().from_run(run, inputs, train, clip, replay=train.replay, mix=train.world_mix)

    def __init__(self, *args, replay: float = 0.0, mix: str = "", **kwargs):
        self.kinds = parse_mix(mix)  # before any sample is drawn
        run = kwargs.get("run")
        kwargs.setdefault("init_from", Path(run) / "pretrain" / "model" if run else None)
        if kwargs["init_from"] is not None and not Path(kwargs["init_from"]).is_dir():
            kwargs["init_from"] = None  # instruction tuning from scratch (no pretrain stage in this run)
        super().__init__(*args, **kwargs)
        if self.custom:
            self.source, self.val_source = self.dataset_sources(ConversationSource)
        if not 0 <= replay < 1:
            raise ConfigError(f"--replay must be in [0, 1), got {replay}")
        self.replay = self.replay_source(kwargs["init_from"]) if replay > 0 else None
        self.replay_fraction = replay

    def replay_source(self, pretrained: Path | None):
        """The pretraining data, when it differs from this stage's: instruction tuning on chat data
        that never draws erased drawing (every prompt drew the same image after full fine-tuning on a
        conversations-only dataset); replaying a share of pretraining pairs keeps it."""
        if pretrained is None:
            return None
        recorded = read_config(pretrained).get("pretrain_data")
        if recorded is None or recorded["data"] == self.data:
            return None
        if recorded["data"] == WORLD:
            return WORLD
        try:
            return make_source(
                recorded["data"], self.codec.image_size, self.seed, part="train", holdout=recorded["holdout"]
            )
        except DatasetError as error:
            raise DatasetError(
                f"instruct replays the pretraining pairs, but: {error}; or pass --replay 0"
            ) from None

    def sample(self, index: int, part: str = "train") -> tuple[list[S.Segment], list]:
        if self.replay is not None and part == "train":
            rng = np.random.default_rng([self.seed, index, 17])
            if rng.random() < self.replay_fraction:
                if self.replay == WORLD:
                    return world_pretrain_sample(self.world, index, rng, self.uncond_prob, self.layout_plan)
                return pair_sample(self.replay, index, rng, self.uncond_prob)
        if self.custom:  # labels from the conversation's own spans: assistant turns only
            messages, images = (self.source if part == "train" else self.val_source).get(index)
            return S.chat_segments(messages, list(range(len(images)))), images
        rng = np.random.default_rng([self.seed, index, 13])
        world = self.world if part == "train" else self.val_world
        return world_instruct_sample(world, index, rng, self.kinds, self.layout_plan)


def parse_mix(text: str) -> dict[str, float]:
    """'look=0.6,draw=0.4' -> {"look": 0.6, "draw": 0.4}, normalised; '' -> INSTRUCT_KINDS."""
    if not text.strip():
        return dict(INSTRUCT_KINDS)
    mix = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in INSTRUCT_KINDS:
            raise ConfigError(
                f"--world-mix: unknown kind {name!r}; choose from {', '.join(INSTRUCT_KINDS)} "
                "(e.g. look=0.6,draw=0.2,edit=0.1,episode=0.1)"
            )
        try:
            mix[name] = float(value)
        except ValueError:
            raise ConfigError(f"--world-mix: {part.strip()!r} needs a number after '='") from None
        if mix[name] < 0:
            raise ConfigError(f"--world-mix: the share of {name} is negative")
    total = sum(mix.values())
    if total <= 0:
        raise ConfigError("--world-mix: the shares add up to 0")
    return {name: share / total for name, share in mix.items()}
