"""Stage `tokenizer`: the image tokenizer and detokenizer (VL-GPT §3.1), trained together to predict
the frozen CLIP's image and caption embeddings from ViT features through N embeddings:
lambda_1 MSE(z_v, e_v) + lambda_2 MSE(z_t, e_t).

Writes RUN/tokenizer/model/: the tokenizer pair.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...core.config import TokenizerPairConfig
from ...eval.retrieval import retrieval_r1
from ...models.loading import save_tokenizer_pair
from ...models.tokenizer_pair import TokenizerPair
from .base import FrozenClipStage, Stage, StageInputs, register_stage


@register_stage
class TokenizerStage(FrozenClipStage, Stage):
    name = "tokenizer"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(inputs, clip_dir=Path(clip) if clip else run)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        clip = self.clip.config
        torch.manual_seed(self.seed)
        self.model = TokenizerPair(TokenizerPairConfig.for_clip(self.model_config.tokenizer, clip))

    def loss(self, batch: dict):
        return self.model(batch["features"], batch["e_v"], batch["e_t"])

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        mse_v = mse_t = cos_t = 0.0
        z_ts, e_ts, groups = [], [], []
        for _, (pixels, captions, group) in self.val_batches():
            batch = self.targets(pixels, captions)
            z_v, z_t = self.model.detokenizer(self.model.tokenizer(batch["features"]))
            n = len(pixels)
            mse_v += torch.nn.functional.mse_loss(z_v, batch["e_v"]).item() * n
            mse_t += torch.nn.functional.mse_loss(z_t, batch["e_t"]).item() * n
            cos_t += torch.nn.functional.cosine_similarity(z_t, batch["e_t"]).sum().item()
            z_ts.append(torch.nn.functional.normalize(z_t, dim=-1))
            e_ts.append(torch.nn.functional.normalize(batch["e_t"], dim=-1))
            groups += group
        n = max(self.eval_size, 1)
        # z_t should stand in for the caption's embedding: retrieve captions with it.
        r1 = retrieval_r1(torch.cat(z_ts), torch.cat(e_ts), groups)["image_to_text_r1"]
        return {"mse_v": mse_v / n, "mse_t": mse_t / n, "cosine_t": cos_t / n, "z_t_caption_r1": r1}

    def export(self, directory: Path) -> None:
        save_tokenizer_pair(directory, self.model)
