"""Stage `clip`: the image tower and the text tower, trained contrastively (InfoNCE, with hard
negatives) and, by default, as a captioner (CapPa); or `--vision PATH`, a local pretrained CLIP or
SigLIP imported as the run's frozen CLIP, as VL-GPT uses one.

Writes RUN/clip/model/: the CLIP and the run's BPE text tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ...core.checkpoint import CheckpointError, atomic_dir
from ...core.text_tokenizer import TextTokenizer
from ...data.negatives import SubstitutionTable
from ...eval.probes import object_rows, probe_objects
from ...eval.retrieval import group_ids, retrieval_r1
from ...models.clip import CLIP
from ...models.loading import save_clip, save_hf_clip
from ...world.language import caption_attribute_scores
from .base import PairStage, Stage, StageInputs, register_stage

NEGATIVE_CORPUS = 2000  # captions the hard negatives' word swaps are learnt from


@register_stage
class ClipStage(PairStage, Stage):
    name = "clip"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(inputs)

    def __init__(self, inputs: StageInputs, text_tokenizer: TextTokenizer | None = None):
        super().__init__(inputs)
        model_config, seed = inputs.model_config, inputs.seed
        vocab = model_config.clip.text.vocab_size
        self.text_tokenizer = text_tokenizer or TextTokenizer.train(self.source.corpus(), vocab)
        if self.text_tokenizer.vocab_size > vocab:
            raise CheckpointError(
                f"text tokenizer has {self.text_tokenizer.vocab_size} tokens, more than the "
                f"configured vocab_size {vocab}"
            )
        torch.manual_seed(seed)
        self.model = CLIP(model_config.clip)
        self.negatives = None
        if model_config.clip.hard_negatives:
            # The swaps are learnt from the training captions (any dataset), not from a word list.
            n = min(NEGATIVE_CORPUS, len(self.source)) if hasattr(self.source, "__len__") else NEGATIVE_CORPUS
            self.negatives = SubstitutionTable.fit([self.source.get(i)[1] for i in range(n)])

    def batch(self, start: int, size: int) -> dict:
        pixels, captions, groups = self.raw_batch(start, size)
        context = self.model_config.clip.text.context_length
        ids, lengths = self.text_tokenizer.batch(captions, context)
        batch = {"pixels": pixels, "ids": ids, "lengths": lengths, "groups": group_ids(groups)}
        if self.negatives is not None:
            rng = np.random.default_rng([self.seed, start, 5])
            swapped = [self.negatives.negative(c, rng) for c in captions]
            texts = [s or c for s, c in zip(swapped, captions)]  # a caption without one is masked out
            neg_ids, neg_lengths = self.text_tokenizer.batch(texts, context)
            valid = torch.tensor([s is not None for s in swapped])
            batch.update(neg_ids=neg_ids, neg_lengths=neg_lengths, neg_valid=valid)
        return batch

    def loss(self, batch: dict):
        parts = {"temperature": 1 / self.model.logit_scale.exp().item()}
        negatives = None
        if "neg_ids" in batch:
            negatives = (batch["neg_ids"], batch["neg_lengths"], batch["neg_valid"])
        pixels, ids, lengths, groups = (batch[k] for k in ("pixels", "ids", "lengths", "groups"))
        loss, _ = self.model(pixels, ids, lengths, groups, parts, negatives)
        return loss, parts

    def tokens(self, batch: dict) -> int:
        return int(batch["lengths"].sum()) + batch["pixels"].shape[0] * (
            self.model_config.clip.vision.num_patches + 1
        )

    def evaluate(self) -> dict:
        self.model.eval()
        metrics = clip_retrieval(self.model, self.text_tokenizer, self)
        if self.model.captioner is not None:
            metrics.update(self.caption_scores())
        if self.val_source.has_scenes:  # can each object's attributes be read from the cell under it?
            scenes = [self.val_source.scene(i) for i in range(self.eval_size)]
            rows = object_rows(lambda pixels: self.model.image_features(pixels)[:, 1:], scenes)
            metrics.update({f"probe_{k}": v for k, v in probe_objects(*rows).items()})
        return metrics

    @torch.no_grad()
    def caption_scores(self) -> dict:
        """The tower's own captions (greedy, from its caption decoder) on the validation images:
        attribute F1 against the scenes where the data has them, else the share said word for word."""
        f1, exact = [], []
        for start, (pixels, captions, _) in self.val_batches():
            features = self.model.image_features(pixels)
            ids = self.model.captioner.generate(features, self.text_tokenizer.eos_id)
            for i, (row, truth) in enumerate(zip(ids, captions)):
                said = self.text_tokenizer.decode(row)
                exact.append(said.strip().lower() == truth.strip().lower())
                if self.val_source.has_scenes:
                    f1.append(caption_attribute_scores(said, self.val_source.scene(start + i))["f1"])
        scores = {"caption_exact": float(np.mean(exact))}
        if f1:
            scores["caption_f1"] = float(np.mean(f1))
        return scores

    def export(self, directory: Path) -> None:
        save_clip(directory, self.model, self.text_tokenizer)


class VisionImport(PairStage):
    """`vlgpt train clip --vision PATH`: a local HF CLIP or SigLIP becomes the run's frozen CLIP, as the
    paper uses a pretrained one. Nothing is trained but the BPE tokenizer the VL-GPT stages use."""

    name = "clip"

    def __init__(self, path: str | Path, inputs: StageInputs):
        from ...models.hf_clip import HFClip

        model_config = inputs.model_config
        self.model = HFClip(path, model_config.clip.condition_grid)
        super().__init__(
            dataclasses.replace(
                inputs, model_config=dataclasses.replace(model_config, clip=self.model.config)
            )
        )
        self.text_tokenizer = TextTokenizer.train(self.source.corpus(), model_config.clip.text.vocab_size)

    def run(self, out: Path) -> dict:
        metrics = clip_retrieval(self.model, self.text_tokenizer, self)
        with atomic_dir(out / "model") as staging:
            save_hf_clip(staging, self.model, self.text_tokenizer)
            (staging / "metrics.json").write_text(json.dumps({"step": 0, **metrics}, indent=2))
        return metrics


@torch.no_grad()
def clip_retrieval(clip: CLIP, text_tokenizer: TextTokenizer, stage: PairStage) -> dict[str, float]:
    images, texts, groups = [], [], []
    for _, (pixels, captions, group) in stage.val_batches():
        images.append(clip.encode_image(pixels))
        texts.append(clip.embed_captions(captions, text_tokenizer))
        groups += group
    return retrieval_r1(torch.cat(images), torch.cat(texts), groups)
