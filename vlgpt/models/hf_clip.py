"""A local Hugging Face CLIP or SigLIP as the run's frozen CLIP (`vlgpt train clip --vision PATH`).

VL-GPT §3.1 supervises its detokenizer with a frozen, pretrained CLIP. `HFClip` wraps a local
`CLIPModel` or `SiglipModel` folder behind the interface vlgpt's own CLIP has, so the tokenizer,
decoder and VL-GPT stages run unchanged:

* `image_features(pixels)`: the vision tower's hidden states [B, 1 + P, W], the tokenizer's input
  (SigLIP has no CLS token; its attention-pooled output takes that place);
* `image_embeddings(pixels)`: e_v, the projected pooled embedding and the projected patch tokens
  pooled to a G x G grid, each scaled to unit RMS, as for vlgpt's CLIP;
* `embed_captions(captions)`: e_t / sqrt(D), the text tower's embedding of each caption, tokenized
  by the checkpoint's own tokenizer.

Images arrive as vlgpt's [B, 3, S, S] tensors in 0..1 at the checkpoint's image size (the data
loaders resize and centre-crop with PIL); the wrapper applies the checkpoint's mean and std from
`preprocessor_config.json`. No torchvision, no remote code, safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checkpoint import CheckpointError
from ..core.config import ClipConfig, TextConfig, VisionConfig
from .clip import scaled_normalize

FAMILIES = ("clip", "siglip")
PROCESSOR_FILE = "preprocessor_config.json"
DEFAULT_STATS = {
    "clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}


def read_hf_config(path: Path) -> dict:
    """The checkpoint's config.json, refusing remote code and non-safetensors weights."""
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{path} is not a Hugging Face model folder: no config.json (save one with "
            "`model.save_pretrained(folder)`)"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{file}: not valid JSON ({error.msg})") from None
    if "auto_map" in config:
        raise CheckpointError(
            f"{file} asks for remote code (auto_map); vlgpt never runs code from a checkpoint"
        )
    if config.get("model_type") not in FAMILIES:
        raise CheckpointError(
            f"{file}: model_type {config.get('model_type')!r} is not a CLIP or SigLIP model with "
            "both towers (the text tower gives e_t); save a CLIPModel or SiglipModel folder"
        )
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"{path} has no .safetensors weights; vlgpt loads safetensors only "
            "(convert with `model.save_pretrained(folder, safe_serialization=True)`)"
        )
    return config


class HFClip(nn.Module):
    """A frozen HF CLIP/SigLIP with vlgpt's CLIP interface; `config` is a vlgpt ClipConfig of its sizes."""

    def __init__(self, path: str | Path, condition_grid: int = 8):
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel, SiglipModel

        path = Path(path)
        hf_config = read_hf_config(path)
        self.family = hf_config["model_type"]
        cls = CLIPModel if self.family == "clip" else SiglipModel
        self.model = cls.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
        self.model.eval().requires_grad_(False)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                path, local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"{path}: cannot load the text tokenizer ({error}); save it beside the model "
                "with `tokenizer.save_pretrained(folder)`"
            ) from None
        mean, std = DEFAULT_STATS[self.family]
        if (path / PROCESSOR_FILE).is_file():
            processor = json.loads((path / PROCESSOR_FILE).read_text(encoding="utf-8"))
            mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        vision, text = self.model.config.vision_config, self.model.config.text_config
        embed_dim = getattr(self.model.config, "projection_dim", None) or text.hidden_size
        grid = vision.image_size // vision.patch_size
        self.config = ClipConfig(
            VisionConfig(
                image_size=vision.image_size,
                patch_size=vision.patch_size,
                width=vision.hidden_size,
                depth=vision.num_hidden_layers,
                heads=vision.num_attention_heads,
            ),
            TextConfig(
                vocab_size=text.vocab_size,
                context_length=text.max_position_embeddings,
                width=text.hidden_size,
                depth=text.num_hidden_layers,
                heads=text.num_attention_heads,
            ),
            embed_dim=embed_dim,
            condition_grid=min(condition_grid, grid),
        )
        self.source = path

    def _vision(self, pixels: torch.Tensor):
        return self.model.vision_model(pixel_values=(pixels - self.mean) / self.std)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._vision(pixels)
        if self.family == "siglip":  # no CLS token: the pooled output stands first
            return torch.cat([out.pooler_output[:, None], out.last_hidden_state], dim=1)
        return out.last_hidden_state

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        """Hidden states -> the joint embedding space, token by token."""
        if self.family == "siglip":
            return (
                features  # SigLIP's image and text towers share the width; the first token is pooled already
            )
        return self.model.visual_projection(self.model.vision_model.post_layernorm(features))

    def image_embeddings(self, pixels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        features = self.image_features(pixels) if features is None else features
        tokens = self._project(features)
        B, _, D = tokens.shape
        g = self.config.vision.grid
        grid = tokens[:, 1:].transpose(1, 2).reshape(B, D, g, g)
        regions = F.adaptive_avg_pool2d(grid, self.config.condition_grid).flatten(2).transpose(1, 2)
        return scaled_normalize(torch.cat([tokens[:, :1], regions], dim=1))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._project(self.image_features(pixels))[:, 0], dim=-1)

    def embed_captions(self, captions: list[str], text_tokenizer=None) -> torch.Tensor:
        """Unit-norm text embeddings [B, D] from the checkpoint's own tokenizer and text tower."""
        padding = (
            "max_length" if self.family == "siglip" else True
        )  # SigLIP was trained on max-length padding
        batch = self.tokenizer(
            captions,
            padding=padding,
            truncation=True,
            return_tensors="pt",
            max_length=self.config.text.context_length,
        )
        out = self.model.text_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
        pooled = out.pooler_output
        if self.family == "clip":
            pooled = self.model.text_projection(pooled)
        return F.normalize(pooled, dim=-1)

    def save(self, directory: Path) -> None:
        """The checkpoint itself (weights, config, tokenizer, processor) under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        if (self.source / PROCESSOR_FILE).is_file():
            shutil.copy(self.source / PROCESSOR_FILE, directory / PROCESSOR_FILE)
