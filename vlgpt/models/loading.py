"""Model folders, both ways: every model a run holds, written as `config.json` (its config
dataclass as a dict, with a `kind`) + `model.safetensors`, and read back as `Model(config)` + weights.

The stages in `train/` save their models through the `save_*` functions here; inference
(`inference/`, `eval/`, `serve/`) loads them through the `load_*` ones and never imports `train/`.

    RUN/clip/model/          CLIP (or a --vision checkpoint under hf/)
    RUN/tokenizer/model/     image tokenizer + detokenizer
    RUN/decoder/model/       pixel decoder; with decoder.train_codec also clip/ and tokenizer/ (tuned);
                             a `--decoder PATH` diffusers pipeline under diffusers/
    RUN/{pretrain,instruct}/model/   the VL-GPT transformer (an HF backbone's files under lm/)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..core.checkpoint import CheckpointError, load_weights, read_config, save_model
from ..core.config import (
    ClipConfig,
    PixelDecoderModelConfig,
    TokenizerPairConfig,
    VLGPTConfig,
    from_dict,
    to_dict,
)
from ..core.devices import empty_parameters
from ..core.hf_lm import LM_DIR, HFTextTokenizer, rebuild_lm, save_lm
from ..core.text_tokenizer import TextTokenizer
from .clip import CLIP
from .diffusers_decoder import DiffusersDecoder, copy_decoder_folder
from .hf_backbone import HFBackbone
from .pixel_decoder import build_pixel_decoder
from .tokenizer_pair import TokenizerPair
from .vlgpt import VLGPT

HF_FOLDER = "hf"  # a --vision checkpoint, inside RUN/clip/model/
DIFFUSERS_FOLDER = "diffusers"  # a --decoder pipeline, inside RUN/decoder/model/
TUNED_CLIP, TUNED_PAIR = "clip", "tokenizer"  # end-to-end tuned copies, inside RUN/decoder/model/


def save_clip(directory: Path, clip: CLIP, text_tokenizer: TextTokenizer) -> None:
    """RUN/clip/model/: our CLIP and the run's BPE tokenizer."""
    save_model(directory, clip, {"kind": "clip", "config": to_dict(clip.config)})
    text_tokenizer.save(directory)


def save_hf_clip(directory: Path, clip, text_tokenizer: TextTokenizer) -> None:
    """RUN/clip/model/ for `--vision PATH`: the checkpoint's files under hf/, the run's BPE, and a
    config.json that says where it came from."""
    clip.save(directory / HF_FOLDER)
    text_tokenizer.save(directory)
    meta = {
        "kind": "clip",
        "backbone": "hf",
        "family": clip.family,
        "source": str(clip.source),
        "config": to_dict(clip.config),
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_clip(run_or_dir: Path, device="cpu", dtype=None) -> tuple[CLIP, TextTokenizer]:
    directory = _model_dir(run_or_dir, "clip")
    config = read_config(directory, "clip")
    if config.get("backbone") == "hf":  # `vlgpt train clip --vision PATH`: the checkpoint kept under hf/
        from .hf_clip import HFClip

        clip = HFClip(directory / HF_FOLDER, condition_grid=config["config"]["condition_grid"])
        clip = clip.to(device=device, dtype=dtype) if dtype is not None else clip.to(device)
        return clip, TextTokenizer.load(directory)
    # A CLIP saved before the captioning loss existed has no caption decoder: build it as it was trained.
    config["config"].setdefault("caption_weight", 0.0)
    with empty_parameters():
        model = CLIP(from_dict(ClipConfig, config["config"], f"{directory}/config.json"))
    model = load_weights(directory, model, device, dtype)
    return model.eval().requires_grad_(False), TextTokenizer.load(directory)


def trained_image_side(run_or_dir: Path) -> tuple[Path, Path]:
    """Where the image encoder (a CLIP folder) and the tokenizer pair come from: the decoder stage's
    end-to-end tuned copies (`decoder.train_codec`) when it wrote them, else the clip and tokenizer
    stages'."""
    path = Path(run_or_dir)
    tuned = path / "decoder" / "model"
    clip_dir = tuned / TUNED_CLIP if (tuned / TUNED_CLIP / "config.json").is_file() else path
    pair_dir = tuned / TUNED_PAIR if (tuned / TUNED_PAIR / "config.json").is_file() else path
    return clip_dir, pair_dir


def save_tokenizer_pair(directory: Path, pair: TokenizerPair) -> None:
    save_model(directory, pair, {"kind": "tokenizer", "config": to_dict(pair.config)})


def load_tokenizer_pair(run_or_dir: Path, device="cpu", dtype=None) -> TokenizerPair:
    directory = _model_dir(run_or_dir, "tokenizer")
    config = read_config(directory, "tokenizer")
    if "feature_width" in config:  # saved before config.json held the whole TokenizerPairConfig
        shapes = ("feature_width", "num_condition_tokens", "embed_dim", "num_patches")
        config["config"] = {"tokenizer": config["config"], **{k: config.get(k) for k in shapes}}
    # A tokenizer saved before queries were seeded has no seed weights: build it as it was trained.
    config["config"]["tokenizer"].setdefault("seeded_queries", False)
    spec = from_dict(TokenizerPairConfig, config["config"], f"{directory}/config.json")
    with empty_parameters():
        model = TokenizerPair(spec)
    return load_weights(directory, model, device, dtype).eval().requires_grad_(False)


def save_pixel_decoder(directory: Path, decoder: torch.nn.Module) -> None:
    save_model(directory, decoder, {"kind": "decoder", "config": to_dict(decoder.model_config)})


def save_diffusers_decoder(directory: Path, decoder: DiffusersDecoder, source: Path) -> None:
    """RUN/decoder/model/ for `--decoder PATH`: the checked pipeline folder under diffusers/ and a
    config.json with where it came from and the shapes of its conditions."""
    copy_decoder_folder(source, directory / DIFFUSERS_FOLDER)
    meta = {
        "kind": "decoder",
        "backbone": "diffusers",
        "source": str(source),
        "pipeline": type(decoder.pipe).__name__,
        "adapter": decoder.adapter,
        "image_size": decoder.image_size,
        "steps": decoder.steps,
        "guidance": decoder.guidance,
        **decoder.shapes,
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")


def diffusers_decoder_dir(run_or_dir: Path) -> Path | None:
    """The imported diffusers pipeline of a run (or of a decoder model folder), or None when the
    decoder is vlgpt's own or not trained yet."""
    path = Path(run_or_dir)
    for candidate in (path / "decoder" / "model", path):
        if (candidate / "config.json").is_file():
            is_diffusers = read_config(candidate).get("backbone") == "diffusers"
            return candidate / DIFFUSERS_FOLDER if is_diffusers else None
    return None


def load_pixel_decoder(run_or_dir: Path, device="cpu", dtype=None):
    """The run's pixel decoder: vlgpt's own (a module with `decode(z_v, z_t)`), or the imported
    diffusers pipeline (`DiffusersDecoder`, whose `decode` also takes steps, guidance and a seed)."""
    directory = _model_dir(run_or_dir, "decoder")
    config = read_config(directory, "decoder")
    if config.get("backbone") == "diffusers":
        return DiffusersDecoder(directory / DIFFUSERS_FOLDER, device, dtype or torch.float32)
    if "embed_dim" in config:  # saved before config.json held the whole PixelDecoderModelConfig
        shapes = ("embed_dim", "image_size", "grid")
        config["config"] = {"decoder": config["config"], **{k: config[k] for k in shapes}}
    spec = from_dict(PixelDecoderModelConfig, config["config"], f"{directory}/config.json")
    with empty_parameters():
        model = build_pixel_decoder(spec)
    return load_weights(directory, model, device, dtype).eval().requires_grad_(False)


def _model_dir(run_or_dir: Path, stage: str) -> Path:
    path = Path(run_or_dir)
    for candidate in (path, path / "model", path / stage / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(
        f"no finished {stage} model under {path}; run `vlgpt train {stage} --out {path}` first"
    )


def find_vlgpt(run_or_dir: Path) -> Path:
    """The VL-GPT model folder of a run (instruct's, else pretrain's), or the folder itself."""
    path = Path(run_or_dir)
    for candidate in (path, path / "model", path / "instruct" / "model", path / "pretrain" / "model"):
        if (candidate / "config.json").is_file() and read_config(candidate).get("kind") == "vlgpt":
            return candidate
    raise CheckpointError(f"no trained VL-GPT under {path}; run `vlgpt train pretrain --out {path}` first")


def save_vlgpt(directory: Path, model: VLGPT, tokenizer, **extra) -> None:
    """config.json (`VLGPTConfig` as a dict, plus `extra`) + model.safetensors + the text tokenizer.
    An HF backbone's config.json and tokenizer files go to lm/ (its weights are in model.safetensors),
    so loading needs no `--lm`."""
    meta = {"kind": "vlgpt", **extra, **to_dict(model.config)}
    if isinstance(model.transformer, HFBackbone):
        meta.update(backbone="hf", lm={"regression_weight": model.config.lm.regression_weight})
        save_lm(directory / LM_DIR, model.transformer.model, tokenizer)
    else:
        tokenizer.save(directory)
    save_model(directory, model, meta)


def load_vlgpt(run_or_dir: Path, device="cpu", dtype=None) -> tuple[VLGPT, dict, HFTextTokenizer | None]:
    """The model, its config.json, and the LM's own tokenizer when it has one (an HF backbone saved
    under model/lm/); None means the run's BPE (`ImageCodec.text_tokenizer`).

    Our own transformer is built with empty parameters and takes the file's tensors (one copy of
    the weights in memory); an HF backbone is built by transformers from its config, then loaded."""
    directory = find_vlgpt(run_or_dir)
    config = read_config(directory, "vlgpt")
    fields = {f.name: config[f.name] for f in dataclasses.fields(VLGPTConfig)}
    vlgpt_config = from_dict(VLGPTConfig, fields, f"{directory}/config.json")
    if config.get("backbone", "vlgpt") == "hf":
        hf_model, tokenizer = rebuild_lm(directory / LM_DIR)
        model = VLGPT(vlgpt_config, HFBackbone(hf_model))
    else:
        with empty_parameters():
            model = VLGPT(vlgpt_config)
        tokenizer = None
    return load_weights(directory, model, device, dtype).eval(), config, tokenizer
