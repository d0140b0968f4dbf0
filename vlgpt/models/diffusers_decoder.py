"""The paper's decoder: a frozen, pretrained latent-diffusion pipeline from `diffusers` turns the
detokenizer's (z_v, z_t) into pixels (VL-GPT §3.1, §4.1: Stable Diffusion v1.5 with an image-prompt
adapter).

    decoder = DiffusersDecoder("models/sd15")        # a local diffusers folder, checked first
    e_t = decoder.text_conditions(["a red circle"])  # [B, L, D_t]: what the UNet cross-attends to
    e_v = decoder.image_conditions(pixels)           # [B, K, D_v]: what the adapter reads (or None)
    images = decoder.decode(z_v, z_t, steps=25, guidance=7.5, seed=0)   # [B, 3, H, W] in 0..1

The detokenizer regresses these conditions (MSE(z_v, e_v) + MSE(z_t, e_t)); no diffusion loss ever
reaches it, since its targets are the decoder's own conditioning. Drawing is the pipeline's own call:
its scheduler, its classifier-free guidance against the unconditional conditions it was trained with
(the empty prompt's text states; a zero image embedding, or the states of a black image for a
`plus` adapter), `num_inference_steps`, a seeded generator.

What a folder must hold (the layout `StableDiffusionPipeline.save_pretrained` writes):
`model_index.json`, `unet/`, `vae/`, `scheduler/`, `text_encoder/`, `tokenizer/`, weights as
safetensors; optionally `image_encoder/` (a `CLIPVisionModelWithProjection`) with the adapter's
weights in `ip_adapter/ip_adapter.safetensors` (`image_proj.*`, `ip_adapter.*`: the file diffusers'
`load_ip_adapter` reads), and `vlgpt.json` with the decoder's default `steps` and `guidance`.
Without an adapter only z_t conditions the drawing. Nothing runs code from the folder: every part
must name a class that diffusers or transformers ships, and no config may ask for `auto_map`.
"""

from __future__ import annotations

import json
import shutil
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.checkpoint import CheckpointError
from ..core.hf_lm import PICKLE_SUFFIXES, require_safetensors

INDEX_FILE = "model_index.json"
REQUIRED_PARTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
WEIGHTED_PARTS = ("unet", "vae", "text_encoder", "image_encoder", "safety_checker")
ADAPTER_DIR, ADAPTER_FILE = "ip_adapter", "ip_adapter.safetensors"
SETTINGS_FILE = "vlgpt.json"  # optional: {"steps": 25, "guidance": 7.5}, the decoder's defaults
LIBRARIES = ("diffusers", "transformers")
PIPELINES = ("StableDiffusionPipeline",)  # SD 1.x / 2.x: one text encoder, cross-attention conditioning
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5  # StableDiffusionPipeline's own defaults
# Files a copy leaves behind: other frameworks' weights, and pickles (never read).
SKIPPED_SUFFIXES = (*PICKLE_SUFFIXES, ".msgpack", ".onnx", ".pb", ".h5", ".ot")
CLIP_STATS = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data


def check_decoder_folder(path: str | Path) -> dict:
    """Refuse what vlgpt never loads, naming the file: a missing part, remote code (a part from a
    library other than diffusers or transformers, a custom pipeline, `auto_map`), weights that are
    only pickled. Returns the folder's model_index.json."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such folder (a local diffusers text-to-image pipeline folder)")
    index_file = path / INDEX_FILE
    if not index_file.is_file():
        raise CheckpointError(
            f"{index_file} is missing; {path} is not a diffusers pipeline folder (save one with "
            "`pipeline.save_pretrained(folder)`)"
        )
    index = _read_json(index_file)
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise CheckpointError(f"{index_file}: _class_name {name!r} asks for a custom pipeline (remote code)")
    if name not in PIPELINES:
        raise CheckpointError(
            f"{index_file}: {name} is not supported; vlgpt draws through {', '.join(PIPELINES)} "
            "(Stable Diffusion 1.x/2.x layouts: one text encoder the UNet cross-attends to)"
        )
    for part, entry in index.items():
        if part.startswith("_") or not isinstance(entry, list):
            continue
        library = entry[0] if entry else None
        if library is not None and library not in LIBRARIES:
            raise CheckpointError(
                f"{index_file}: part {part!r} comes from {library!r}; vlgpt loads only classes that "
                "diffusers or transformers ship, never code from a model folder"
            )
    for part in REQUIRED_PARTS:
        if part not in index or not (path / part).is_dir():
            raise CheckpointError(
                f"{path / part} is missing: a text-to-image decoder needs {', '.join(REQUIRED_PARTS)}"
            )
    for file in sorted(path.rglob("*.json")):
        data = _read_json(file)
        if "auto_map" in data:
            raise CheckpointError(
                f"{file} asks for remote code (auto_map); vlgpt never runs code from a model folder"
            )
    parts = [p for p in WEIGHTED_PARTS if isinstance(index.get(p), list) and index[p][0] is not None]
    for part in parts:
        require_safetensors(path / part, "*.safetensors")
    if (path / ADAPTER_DIR).exists():
        require_safetensors(path / ADAPTER_DIR, ADAPTER_FILE)
        if "image_encoder" not in parts:
            raise CheckpointError(
                f"{path / ADAPTER_DIR} needs the image encoder its embeddings come from: save a "
                f"CLIPVisionModelWithProjection as {path / 'image_encoder'} (and list it in {INDEX_FILE})"
            )
    if (path / SETTINGS_FILE).is_file():
        settings = _read_json(path / SETTINGS_FILE)
        unknown = set(settings) - {"steps", "guidance"}
        if unknown:
            raise CheckpointError(f"{path / SETTINGS_FILE}: unknown key(s) {', '.join(sorted(unknown))}")
    return index


def copy_decoder_folder(source: Path, target: Path) -> None:
    """The checked folder's configs, tokenizer files and safetensors, without pickles or other
    frameworks' weights: what the run keeps so that it no longer needs `source`."""
    shutil.copytree(
        source,
        target,
        ignore=lambda _, names: [n for n in names if n.endswith(SKIPPED_SUFFIXES) or n.startswith(".")],
    )


def encoder_pixels(pixels: torch.Tensor, size: int, mean=CLIP_STATS[0], std=CLIP_STATS[1]) -> torch.Tensor:
    """[B, 3, S, S] in 0..1 -> an image encoder's input: resized to `size` (bicubic, antialiased) where
    it differs, normalised with the processor's mean and std."""
    x = pixels.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _quiet() -> None:
    """Loading bars off: a run loads the decoder at every verb, and its bars read as work being done."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    # encode_prompt tokenizes each caption untruncated first, only to warn that it will truncate it.
    transformers_logging.get_logger("transformers.tokenization_utils_base").setLevel("ERROR")


class DiffusersDecoder:
    """A frozen diffusers pipeline behind the pixel decoder's interface (`decode(z_v, z_t)`), plus the
    conditions it reads, which the `tokenizer` stage regresses."""

    stochastic = True  # the picture depends on the seed; `steps` and `guidance` apply

    def __init__(self, path: str | Path, device="cpu", dtype=torch.float32):
        from diffusers import DiffusionPipeline

        path = Path(path)
        check_decoder_folder(path)
        _quiet()
        try:
            self.pipe = DiffusionPipeline.from_pretrained(
                path, local_files_only=True, use_safetensors=True, dtype=dtype
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{path}: cannot load as a diffusers pipeline ({str(error).splitlines()[0][:300]})"
            ) from None
        self.adapter = None
        if (path / ADAPTER_DIR).is_dir():
            from safetensors import safe_open

            with safe_open(path / ADAPTER_DIR / ADAPTER_FILE, framework="pt") as weights:
                keys = set(weights.keys())
            # The standard adapter projects the pooled image embedding to 4 tokens; the `plus` one
            # resamples the encoder's penultimate hidden states (its `latents` queries).
            self.adapter = "plus" if "image_proj.latents" in keys else "ip-adapter"
            if self.adapter == "ip-adapter" and "image_proj.proj.weight" not in keys:
                raise CheckpointError(
                    f"{path / ADAPTER_DIR / ADAPTER_FILE}: not an IP-Adapter or IP-Adapter Plus "
                    "(no image_proj.proj.weight or image_proj.latents)"
                )
            self.pipe.load_ip_adapter(
                str(path),
                subfolder=ADAPTER_DIR,
                weight_name=ADAPTER_FILE,
                image_encoder_folder=None,
                local_files_only=True,
            )
        self.pipe.to(device)
        settings = json.loads((path / SETTINGS_FILE).read_text()) if (path / SETTINGS_FILE).is_file() else {}
        self._setup(settings.get("steps", DEFAULT_STEPS), settings.get("guidance", DEFAULT_GUIDANCE))
        self.path = path

    @classmethod
    def from_pipeline(cls, pipe, adapter: str | None, steps: int, guidance: float) -> DiffusersDecoder:
        """A pipeline assembled in memory (the `diffusion` stage's, while it trains) behind the same
        interface, so that it is evaluated exactly as its saved folder will draw."""
        self = cls.__new__(cls)
        self.pipe, self.adapter, self.path = pipe, adapter, None
        self._setup(steps, guidance)
        return self

    def _setup(self, steps: int, guidance: float) -> None:
        self.pipe.set_progress_bar_config(disable=True)
        self.device, self.dtype = self.pipe.device, self.pipe.unet.dtype
        self.steps, self.guidance = int(steps), float(guidance)
        self.image_size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        self._empty = None

    # --- the conditions (the detokenizer's targets) ------------------------------------------------
    @torch.no_grad()
    def text_conditions(self, captions: list[str]) -> torch.Tensor:
        """e_t: the text encoder's hidden states of each caption [B, L, D_t], exactly the pipeline's
        `encode_prompt` (what its UNet cross-attends to)."""
        embeds, _ = self.pipe.encode_prompt(list(captions), self.device, 1, False)
        return embeds

    @torch.no_grad()
    def image_conditions(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """e_v: what the adapter reads from the image encoder, [B, 1, D_v] (the projected image
        embedding) or, for a `plus` adapter, [B, 1 + P, W] (the penultimate hidden states); None
        without an adapter. `pixels` [B, 3, S, S] in 0..1 are resized to the encoder's size and
        normalised with its processor's statistics (CLIP's without one)."""
        if self.adapter is None:
            return None
        encoder = self.pipe.image_encoder
        x = self._encoder_input(pixels.to(self.device, self.dtype))
        out = encoder(x, output_hidden_states=self.adapter == "plus")
        return out.hidden_states[-2] if self.adapter == "plus" else out.image_embeds[:, None]

    def _encoder_input(self, pixels: torch.Tensor) -> torch.Tensor:
        processor = getattr(self.pipe, "feature_extractor", None)
        stats = (processor.image_mean, processor.image_std) if processor is not None else CLIP_STATS
        size = self.pipe.image_encoder.config.image_size
        return encoder_pixels(pixels, size, *stats).to(self.dtype)

    @cached_property
    def shapes(self) -> dict:
        """The conditions' shapes, which size the detokenizer: text_tokens L, text_dim, image_tokens K
        (0 without an adapter), image_dim."""
        e_t = self.text_conditions([""])
        e_v = self.image_conditions(torch.zeros(1, 3, 8, 8))
        return {
            "text_tokens": e_t.shape[1],
            "text_dim": e_t.shape[2],
            "image_tokens": 0 if e_v is None else e_v.shape[1],
            "image_dim": e_t.shape[2] if e_v is None else e_v.shape[2],
        }

    @torch.no_grad()
    def unconditional(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """What classifier-free guidance steers away from, as the pipeline was trained: the empty
        prompt's text states, and a zero image embedding (the states of a black image for `plus`)."""
        if self._empty is None:
            u_t = self.text_conditions([""])
            u_v = None
            if self.adapter == "ip-adapter":
                u_v = torch.zeros_like(self.image_conditions(torch.zeros(1, 3, 8, 8)))
            elif self.adapter == "plus":  # diffusers encodes a zero (mid-grey after normalising) image
                size = self.pipe.image_encoder.config.image_size
                zeros = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
                u_v = self.pipe.image_encoder(zeros, output_hidden_states=True).hidden_states[-2]
            self._empty = (u_v, u_t)
        return self._empty

    # --- drawing -------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self,
        z_v: torch.Tensor | None,
        z_t: torch.Tensor,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """(z_v [B, K, D_v], z_t [B, L, D_t]) -> images [B, 3, H, W] in 0..1 through the pipeline: its
        scheduler for `steps` (the decoder's default if None), guidance `guidance` against the
        unconditional conditions (> 1 on; the decoder's default if None), noise from `seed`."""
        steps = self.steps if steps is None else int(steps)
        guidance = self.guidance if guidance is None else float(guidance)
        B = z_t.shape[0]
        u_v, u_t = self.unconditional()
        z_t = z_t.to(self.device, self.dtype)
        kwargs = {}
        if self.adapter is not None:
            image = z_v.to(self.device, self.dtype)
            if self.adapter == "plus":  # [B, num_images = 1, K, W], as prepare_ip_adapter_image_embeds
                image, u_v = image[:, None], u_v[:, None]
            if guidance > 1:  # the pipeline splits [negative, positive] along the batch
                image = torch.cat([u_v.expand_as(image), image])
            kwargs["ip_adapter_image_embeds"] = [image]
        generator = torch.Generator().manual_seed(int(seed))  # on the CPU: the same noise on every device
        return self.pipe(
            prompt_embeds=z_t,
            negative_prompt_embeds=u_t.expand(B, -1, -1) if guidance > 1 else None,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="pt",
            height=self.image_size,
            width=self.image_size,
            **kwargs,
        ).images.float()
