"""Stage `tokenizer`: the image tokenizer and detokenizer (VL-GPT §3.1), trained together to predict
the decoder's conditions from ViT features through N embeddings: lambda_1 MSE(z_v, e_v) +
lambda_2 MSE(z_t, e_t).

The targets are the frozen CLIP's image and caption embeddings, or, when the run draws through a
pretrained diffusion pipeline (`vlgpt train decoder --decoder PATH`, imported before this stage),
that pipeline's own conditioning, as the paper trains against Stable Diffusion's: e_t = its text
encoder's hidden states of the caption, e_v = the image embedding its adapter reads.

Writes RUN/tokenizer/model/: the tokenizer pair.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...core.config import TokenizerPairConfig
from ...eval.retrieval import retrieval_r1
from ...models.diffusers_decoder import DiffusersDecoder
from ...models.loading import diffusers_decoder_dir, save_tokenizer_pair
from ...models.tokenizer_pair import TokenizerPair
from ...world.language import canonical_caption
from .base import FrozenClipStage, Stage, StageInputs, register_stage


@register_stage
class TokenizerStage(FrozenClipStage, Stage):
    name = "tokenizer"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(inputs, clip_dir=Path(clip) if clip else run, decoder_dir=diffusers_decoder_dir(run))

    def __init__(self, *args, decoder_dir: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        clip = self.clip.config
        self.decoder = DiffusersDecoder(decoder_dir) if decoder_dir is not None else None
        torch.manual_seed(self.seed)
        if self.decoder is None:
            config = TokenizerPairConfig.for_clip(self.model_config.tokenizer, clip)
        else:
            config = TokenizerPairConfig.for_decoder(self.model_config.tokenizer, clip, self.decoder.shapes)
        self.model = TokenizerPair(config)

    def captions(self, source, start: int, captions: list[str]) -> list[str]:
        """The captions whose text states e_t are: the data's, or on the Shapes world with a diffusion
        decoder the world's one canonical caption of each scene (its own task): a caption drawn from
        twenty templates at random would make the best z_t a blend of their text states."""
        if (
            self.decoder is None
            or not source.has_scenes
            or not self.model.config.tokenizer.canonical_captions
        ):
            return captions
        return [canonical_caption(source.scene(start + i)) for i in range(len(captions))]

    def batch(self, start: int, size: int) -> dict:
        pixels, captions, _ = self.raw_batch(start, size)
        return self.targets(pixels, self.captions(self.source, start, captions))

    @torch.no_grad()
    def targets(self, pixels: torch.Tensor, captions: list[str]) -> dict:
        if self.decoder is None:
            return super().targets(pixels, captions)
        e_v = self.decoder.image_conditions(pixels)
        e_t = self.decoder.text_conditions(captions)
        if e_v is None:  # no adapter: nothing to regress for the image condition
            e_v = e_t.new_zeros(len(pixels), 0, self.model.config.embed_dim)
        return {
            "pixels": pixels,
            "features": self.clip.image_features(pixels),
            "e_v": e_v.float(),
            "e_t": e_t.float(),
            "captions": captions,
        }

    def tokens(self, batch: dict) -> int:
        e_t = batch["e_t"]
        return len(e_t) * (batch["e_v"].shape[1] + (e_t.shape[1] if e_t.dim() == 3 else 1))

    def loss(self, batch: dict):
        return self.model(batch["features"], batch["e_v"], batch["e_t"])

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        mse_v = mse_t = cos_t = 0.0
        z_ts, e_ts, groups = [], [], []
        for start, (pixels, captions, group) in self.val_batches():
            batch = self.targets(pixels, self.captions(self.val_source, start, captions))
            z_v, z_t = self.model.detokenizer(self.model.tokenizer(batch["features"]))
            z_t, e_t = z_t.flatten(1), batch["e_t"].flatten(1)  # a decoder's text states as one vector
            n = len(pixels)
            if z_v.shape[1]:
                mse_v += F.mse_loss(z_v, batch["e_v"]).item() * n
            mse_t += F.mse_loss(z_t, e_t).item() * n
            cos_t += F.cosine_similarity(z_t, e_t).sum().item()
            z_ts.append(F.normalize(z_t, dim=-1))
            e_ts.append(F.normalize(e_t, dim=-1))
            groups += group
        n = max(self.eval_size, 1)
        # z_t should stand in for the caption's embedding: retrieve captions with it.
        r1 = retrieval_r1(torch.cat(z_ts), torch.cat(e_ts), groups)["image_to_text_r1"]
        return {"mse_v": mse_v / n, "mse_t": mse_t / n, "cosine_t": cos_t / n, "z_t_caption_r1": r1}

    def export(self, directory: Path) -> None:
        save_tokenizer_pair(directory, self.model)
