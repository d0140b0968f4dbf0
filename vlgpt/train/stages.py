"""The stages before the transformer: `clip`, `tokenizer` and `decoder`, as engine Tasks.

| stage     | trains                       | frozen | loss                               |
|-----------|------------------------------|--------|------------------------------------|
| clip      | ViT + text tower             | —      | InfoNCE                            |
| tokenizer | image tokenizer+detokenizer  | clip   | MSE(z_v, e_v) + MSE(z_t, e_t)      |
| decoder   | pixel decoder                | clip   | L1 + edge L1 from (e_v, e_t)       |

A run folder holds one sub-folder per stage; each stage's deliverable is `RUN/<stage>/model/`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import CheckpointError, atomic_dir, save_model
from ..core.config import (
    PixelDecoderModelConfig,
    TextConfig,
    TokenizerPairConfig,
    to_dict,
)
from ..core.text_tokenizer import TextTokenizer
from ..data.images import pixels_from, to_pil
from ..data.negatives import SubstitutionTable
from ..data.sources import make_source
from ..eval.probes import object_rows, probe_objects
from ..eval.retrieval import group_ids, retrieval_r1
from ..models.captioner import Captioner
from ..models.clip import CLIP
from ..models.end_to_end import CodecChain
from ..models.loading import CLIP_FOLDER, CODEC_FOLDER, HF_FOLDER, load_clip, load_tokenizer_pair
from ..models.pixel_decoder import build_pixel_decoder
from ..models.tokenizer_pair import TokenizerPair
from ..world.judge import compare_scenes, judge
from ..world.language import caption_attribute_scores
from .registry import StageInputs, register_stage

# --- shared pieces -----------------------------------------------------------------------------


class StageBase:
    """Data plumbing shared by the three stages."""

    name = "stage"

    def __init__(self, inputs: StageInputs):
        self.model_config, self.data, self.seed = inputs.model_config, inputs.data, inputs.seed
        size = inputs.model_config.clip.vision.image_size
        holdout = inputs.eval_size if inputs.val_data is None else 0
        self.source = make_source(inputs.data, size, inputs.seed, "train", holdout)
        self.val_source = make_source(inputs.val_data or inputs.data, size, inputs.seed, "val", holdout)
        self.eval_size = (
            min(inputs.eval_size, len(self.val_source))
            if hasattr(self.val_source, "__len__")
            else inputs.eval_size
        )

    def raw_batch(self, start: int, size: int, source=None) -> tuple[torch.Tensor, list[str], list[str]]:
        items = [(source or self.source).get(i) for i in range(start, start + size)]
        return pixels_from([a for a, _, _ in items]), [c for _, c, _ in items], [g for _, _, g in items]

    def val_batches(self, batch_size: int = 128):
        for start in range(0, self.eval_size, batch_size):
            yield start, self.raw_batch(start, min(batch_size, self.eval_size - start), self.val_source)


@torch.no_grad()
def clip_retrieval(clip: CLIP, text_tokenizer: TextTokenizer, stage: StageBase) -> dict[str, float]:
    images, texts, groups = [], [], []
    for _, (pixels, captions, group) in stage.val_batches():
        images.append(clip.encode_image(pixels))
        texts.append(clip.embed_captions(captions, text_tokenizer))
        groups += group
    return retrieval_r1(torch.cat(images), torch.cat(texts), groups)


# --- stage: clip -------------------------------------------------------------------------------


NEGATIVE_CORPUS = 2000  # captions the hard negatives' word swaps are learnt from


@register_stage
class ClipStage(StageBase):
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
        save_model(directory, self.model, {"kind": "clip", "config": to_dict(self.model_config.clip)})
        self.text_tokenizer.save(directory)


class VisionImport(StageBase):
    """`vlgpt train clip --vision PATH`: a local HF CLIP or SigLIP becomes the run's frozen CLIP, as the
    paper uses a pretrained one. Nothing is trained but the BPE tokenizer the VL-GPT stages use."""

    name = "clip"

    def __init__(self, path: str | Path, inputs: StageInputs):
        from ..models.hf_clip import HFClip

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
            self.model.save(staging / HF_FOLDER)
            self.text_tokenizer.save(staging)
            (staging / "config.json").write_text(
                json.dumps(
                    {
                        "kind": "clip",
                        "backbone": "hf",
                        "family": self.model.family,
                        "source": str(self.model.source),
                        "config": to_dict(self.model.config),
                    },
                    indent=2,
                )
                + "\n"
            )
            (staging / "metrics.json").write_text(json.dumps({"step": 0, **metrics}, indent=2))
        return metrics


# --- stage: tokenizer --------------------------------------------------------------------------


class FrozenClipStage(StageBase):
    """Stages that read e_v and e_t from the frozen CLIP of the same run."""

    def __init__(self, inputs: StageInputs, clip_dir: Path):
        self.clip, self.text_tokenizer = load_clip(clip_dir)
        if self.clip.config != inputs.model_config.clip:
            # The run's CLIP decides the image size and embedding width, not the preset.
            model_config = dataclasses.replace(inputs.model_config, clip=self.clip.config)
            inputs = dataclasses.replace(inputs, model_config=model_config)
        super().__init__(inputs)

    @torch.no_grad()
    def targets(self, pixels: torch.Tensor, captions: list[str]) -> dict:
        features = self.clip.image_features(pixels)
        e_t = self.clip.embed_captions(captions, self.text_tokenizer) * math.sqrt(self.clip.config.embed_dim)
        return {
            "pixels": pixels,
            "features": features,
            "e_v": self.clip.image_embeddings(pixels, features),
            "e_t": e_t,
            "captions": captions,
        }

    def batch(self, start: int, size: int) -> dict:
        pixels, captions, _ = self.raw_batch(start, size)
        return self.targets(pixels, captions)

    def tokens(self, batch: dict) -> int:
        return batch["e_v"].shape[0] * batch["e_v"].shape[1]


@register_stage
class TokenizerStage(FrozenClipStage):
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


def save_tokenizer_pair(directory: Path, pair: TokenizerPair) -> None:
    save_model(directory, pair, {"kind": "tokenizer", "config": to_dict(pair.config)})


# --- stage: decoder ----------------------------------------------------------------------------


@register_stage
class DecoderStage(FrozenClipStage):
    name = "decoder"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(
            inputs,
            clip_dir=Path(clip) if clip else run,
            codec_dir=run if (run / "tokenizer" / "model").is_dir() else None,
        )

    def __init__(self, *args, codec_dir: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        vision = self.clip.config.vision
        torch.manual_seed(self.seed)
        self.model = build_pixel_decoder(
            PixelDecoderModelConfig.for_clip(self.model_config.decoder, self.clip.config)
        )
        config = self.model_config.decoder
        self.chain = None
        if config.train_codec:  # tokenizer, detokenizer (and our ViT) learn from the pixel loss too
            if codec_dir is None:
                raise CheckpointError(
                    "decoder.train_codec fine-tunes the run's tokenizer: run `vlgpt train "
                    "tokenizer` first, or pass --set decoder.train_codec=false"
                )
            vision = None
            if isinstance(self.clip, CLIP):  # our own ViT trains on; a pretrained --vision CLIP stays frozen
                vision = copy.deepcopy(self.clip.vision).requires_grad_(True).train()
            codec = load_tokenizer_pair(codec_dir).requires_grad_(True).train()
            captioner = None
            if config.caption_weight > 0:  # discarded after training: a training aid, like CLIP's
                text = getattr(self.clip.config, "text", None) or TextConfig(self.text_tokenizer.vocab_size)
                captioner = Captioner(text, codec.config.tokenizer.token_dim, self.clip.config.caption_depth)
            self.model = self.chain = CodecChain(config, codec, self.model, vision, captioner)
            self.codec = None
            return
        fraction = config.detokenized_fraction
        # The run's frozen tokenizer-detokenizer, when the recipe mixes its outputs into training.
        self.codec = load_tokenizer_pair(codec_dir) if fraction > 0 and codec_dir is not None else None
        if fraction > 0 and self.codec is None:
            raise CheckpointError(
                "decoder.detokenized_fraction > 0 needs a trained tokenizer: run `vlgpt train "
                "tokenizer` first, or pass --set decoder.detokenized_fraction=0"
            )

    def batch(self, start: int, size: int) -> dict:
        batch = super().batch(start, size)
        if self.codec is not None:
            # Replace a fixed share of each batch's (e_v, e_t) by the detokenizer's (z_v, z_t), so the
            # decoder learns the conditions it will see at inference (deterministic per batch).
            k = round(self.model_config.decoder.detokenized_fraction * size)
            with torch.no_grad():
                z_v, z_t = self.codec.detokenizer(self.codec.tokenizer(batch["features"][:k]))
            batch["e_v"] = torch.cat([z_v, batch["e_v"][k:]])
            batch["e_t"] = torch.cat([z_t, batch["e_t"][k:]])
        return batch

    def loss(self, batch: dict):
        if self.chain is not None:
            features = None if self.chain.vision is not None else batch["features"]
            captions = None
            if self.chain.captioner is not None:
                context = self.chain.captioner.pos_embed.shape[1]
                captions = self.text_tokenizer.batch(batch["captions"], context)
            return self.chain(batch["pixels"], features, batch["e_v"], batch["e_t"], captions, self.critic)
        return self.model.loss(batch["e_v"], batch["e_t"], batch["pixels"], self.critic)

    def critic(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen tower's grid features of `pixels`: what the perceptual term compares."""
        return self.clip.image_features(pixels)[:, 1:]

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        l1, agreement = 0.0, []
        for start, (pixels, captions, _) in self.val_batches():
            batch = self.targets(pixels, captions)
            if self.chain is not None:
                images = self.chain.reconstruct(pixels, batch["features"])
            else:
                if self.codec is not None:  # score what inference will do: decode the detokenizer's output
                    batch["e_v"], batch["e_t"] = self.codec.detokenizer(
                        self.codec.tokenizer(batch["features"])
                    )
                images = self.model.decode(batch["e_v"], batch["e_t"])
            l1 += torch.nn.functional.l1_loss(images, pixels).item() * len(pixels)
            if self.val_source.has_scenes:
                agreement += [
                    compare_scenes(judge(to_pil(img)), self.val_source.scene(start + i))
                    for i, img in enumerate(images)
                ]
        result = {"l1": l1 / max(self.eval_size, 1)}
        result.update(agreement_summary(agreement, prefix="judge_"))
        return result

    def export(self, directory: Path) -> None:
        decoder = self.chain.decoder if self.chain is not None else self.model
        save_pixel_decoder(directory, decoder)
        if self.chain is None:
            return
        (directory / CODEC_FOLDER).mkdir()
        save_tokenizer_pair(directory / CODEC_FOLDER, self.chain.codec)
        if self.chain.vision is not None:  # the run's CLIP with the tuned image tower: the codec's encoder
            tuned = copy.deepcopy(self.clip)
            tuned.vision.load_state_dict(self.chain.vision.state_dict())
            (directory / CLIP_FOLDER).mkdir()
            save_model(directory / CLIP_FOLDER, tuned, {"kind": "clip", "config": to_dict(self.clip.config)})
            self.text_tokenizer.save(directory / CLIP_FOLDER)


def save_pixel_decoder(directory: Path, decoder: torch.nn.Module) -> None:
    save_model(directory, decoder, {"kind": "decoder", "config": to_dict(decoder.model_config)})


def agreement_summary(results: list[dict], prefix: str = "") -> dict:
    if not results:
        return {}
    keys = ("count", "colors", "shapes", "sizes", "kinds", "relations", "exact")
    return {prefix + k: float(np.mean([r[k] for r in results])) for k in keys}
