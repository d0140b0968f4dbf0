"""The world's own decoder: a small latent diffusion model built from diffusers parts, trained once
from captions and images and then used frozen through `--decoder PATH`, as VL-GPT uses Stable
Diffusion (§3.1). Nothing here is Shapes-specific: it trains on any captioned images.

    vae = build_vae(AutoencoderConfig(), image_size=64)   # diffusers AutoencoderKL (stage `vae`)
    model = LatentDiffusion(DiffusionConfig(), 64, vae.config.latent_channels, 4, tokenizer)
    loss, parts = model.loss(latents, ids, pixels, keep_image)   # v-prediction MSE (stage `diffusion`)
    save_pipeline(folder, model, vae, tokenizer)          # Stable Diffusion's layout + ip_adapter/

The parts, as Stable Diffusion + IP-Adapter has them:

* `vae`: an `AutoencoderKL` (its own stage), frozen here; latents scaled to unit variance.
* `text_encoder`: a `CLIPTextModel` (width = the UNet's cross-attention width) over the decoder's own
  BPE tokenizer (a `PreTrainedTokenizerFast`: [BOS] caption [EOS], padded to `text_length`); its
  last hidden states are what the UNet cross-attends to, e_t for the detokenizer.
* `image_encoder`: a `CLIPVisionModelWithProjection`; its projected embedding is what the adapter
  reads, e_v for the detokenizer.
* `unet`: a `UNet2DConditionModel` with IP-Adapter attention processors (a key and value map for the
  image tokens beside each cross-attention) and an `ImageProjection` (the embedding -> 4 tokens).

Text and image encoder learn with the UNet (Stable Diffusion borrows both pretrained; we have none),
then everything is frozen. Classifier-free guidance is learnt by dropping each condition: an empty
caption (`drop_text`) and a zero image embedding (`drop_image`) are exactly the unconditional
conditions the pipeline guides against (`DiffusersDecoder.unconditional`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from ..core.config import AutoencoderConfig, ConfigError, DiffusionConfig
from .diffusers_decoder import ADAPTER_DIR, ADAPTER_FILE, SETTINGS_FILE, encoder_pixels

IMAGE_TOKENS = 4  # the IP-Adapter's ImageProjection: one embedding -> 4 tokens (diffusers' layout fixes it)


def int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"{name}: expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name}: expected positive numbers, got {text!r}")
    return values


def _groups(channels: tuple[int, ...]) -> int:
    """GroupNorm groups that divide every level's channels (at most 32, as diffusers' default)."""
    return max(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in channels))


def build_vae(config: AutoencoderConfig, image_size: int):
    """An AutoencoderKL whose latent is the image halved once per level after the first."""
    from diffusers import AutoencoderKL

    channels = int_list(config.channels, "vae.channels")
    if image_size % 2 ** (len(channels) - 1):
        raise ConfigError(f"vae.channels: {len(channels)} levels do not divide the image size {image_size}")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        latent_channels=config.latent_channels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=_groups(channels),
        sample_size=image_size,
    )


def vae_scale(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def attach_ip_adapter(unet, image_dim: int) -> None:
    """IP-Adapter on `unet`, freshly initialised: what diffusers' `load_ip_adapter` builds from a
    release file, built here from the UNet's shapes so that it can be trained."""
    from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    cross = unet.config.cross_attention_dim
    processors = {}
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            attention = unet.get_submodule(name.removesuffix(".processor"))
            processors[name] = IPAdapterAttnProcessor2_0(
                hidden_size=attention.to_k.out_features, cross_attention_dim=cross, num_tokens=(IMAGE_TOKENS,)
            )
        else:
            processors[name] = AttnProcessor2_0()
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([ImageProjection(image_dim, cross, IMAGE_TOKENS)])
    unet.config.encoder_hid_dim_type = "ip_image_proj"


def detach_ip_adapter(unet) -> dict[str, torch.Tensor]:
    """Takes the adapter off `unet` (a copy to be saved) and returns it in the release's file layout
    (`image_proj.proj`, `image_proj.norm`, `ip_adapter.{1,3,5,...}.to_{k,v}_ip`), which
    `load_ip_adapter` reads back."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    projection = unet.encoder_hid_proj.image_projection_layers[0]
    weights = {
        "image_proj.proj.weight": projection.image_embeds.weight,
        "image_proj.proj.bias": projection.image_embeds.bias,
        "image_proj.norm.weight": projection.norm.weight,
        "image_proj.norm.bias": projection.norm.bias,
    }
    cross = [p for n, p in unet.attn_processors.items() if n.endswith("attn2.processor")]
    for i, processor in enumerate(cross):
        weights[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = processor.to_k_ip[0].weight
        weights[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = processor.to_v_ip[0].weight
    unet.set_attn_processor(AttnProcessor2_0())
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = None
    return {k: v.detach().float().contiguous().cpu() for k, v in weights.items()}


def build_unet(config: DiffusionConfig, sample_size: int, latent_channels: int):
    from diffusers import UNet2DConditionModel

    channels = int_list(config.channels, "diffusion.channels")
    attention = int_list(config.attention.replace("0", "2"), "diffusion.attention")  # 2: off, 1: on
    if len(attention) != len(channels):
        raise ConfigError(
            f"diffusion.attention names {len(attention)} levels, diffusion.channels {len(channels)}"
        )
    down = tuple("CrossAttnDownBlock2D" if a == 1 else "DownBlock2D" for a in attention)
    up = tuple("CrossAttnUpBlock2D" if a == 1 else "UpBlock2D" for a in reversed(attention))
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=channels,
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=_groups(channels),
    )


def noise_schedule(config: DiffusionConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=config.schedule, prediction_type=config.prediction
    )


class LatentDiffusion(nn.Module):
    """What the `diffusion` stage trains: text encoder, image encoder and UNet (with its adapter)."""

    def __init__(self, config: DiffusionConfig, image_size: int, latent_channels: int, scale: int, tokenizer):
        super().__init__()
        from transformers import (
            CLIPTextConfig,
            CLIPTextModel,
            CLIPVisionConfig,
            CLIPVisionModelWithProjection,
        )

        self.config, self.image_size = config, image_size
        width = config.cross_attention_dim
        self.text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=width,
                intermediate_size=4 * width,
                num_hidden_layers=config.text_depth,
                num_attention_heads=config.text_heads,
                max_position_embeddings=config.text_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        if image_size % config.image_patch:
            raise ConfigError(f"diffusion.image_patch {config.image_patch} does not divide {image_size}")
        self.image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=config.image_width,
                intermediate_size=4 * config.image_width,
                num_hidden_layers=config.image_depth,
                num_attention_heads=max(config.image_width // 32, 1),
                image_size=image_size,
                patch_size=config.image_patch,
                projection_dim=config.image_dim,
            )
        )
        self.unet = build_unet(config, image_size // scale, latent_channels)
        attach_ip_adapter(self.unet, config.image_dim)
        self.noise = noise_schedule(config)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """e_v: [B, image_dim], exactly as `DiffusersDecoder.image_conditions` computes it."""
        return self.image_encoder(encoder_pixels(pixels, self.image_size)).image_embeds

    def loss(
        self, latents: torch.Tensor, ids: torch.Tensor, pixels: torch.Tensor, keep_image: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """The diffusion loss of `latents` [B, C, h, w] (scaled) given caption ids [B, L] and the image
        embedding of `pixels`, zeroed where `keep_image` [B] is False (the unconditional image)."""
        text = self.text_encoder(ids)[0]  # [B, L, width]: what the UNet cross-attends to
        image = self.image_embeddings(pixels) * keep_image[:, None].to(latents.dtype)  # [B, image_dim]
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (len(latents),), device=latents.device)
        noisy = self.noise.add_noise(latents, noise, t)
        target = noise if self.config.prediction == "epsilon" else self.noise.get_velocity(latents, noise, t)
        predicted = self.unet(
            noisy, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [image[:, None]]}
        ).sample
        errors = (predicted.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # [B]
        mse = errors.mean()
        if self.config.snr_gamma > 0:  # Min-SNR-gamma: v-prediction's weight is min(SNR, g) / (SNR + 1)
            alphas = self.noise.alphas_cumprod.to(latents.device)[t]
            snr = alphas / (1 - alphas)
            weight = snr.clamp(max=self.config.snr_gamma) / (
                snr + 1 if self.config.prediction != "epsilon" else snr
            )
            return (weight * errors).mean(), {"mse": mse.detach()}
        return mse, {"mse": mse.detach()}


def latent_scale(vae, pixels: torch.Tensor) -> float:
    """The factor that gives the VAE's latents unit variance (Stable Diffusion's 0.18215, measured)."""
    with torch.no_grad():
        latents = vae.encode(2 * pixels - 1).latent_dist.mode()
    return float(1.0 / latents.float().std().clamp(min=1e-6))


def encode_latents(vae, pixels: torch.Tensor, sample: bool = False) -> torch.Tensor:
    """Pixels [B, 3, H, W] in 0..1 -> scaled latents (the VAE reads -1..1, as Stable Diffusion's): the
    posterior's mean, or a sample of it."""
    with torch.no_grad():
        posterior = vae.encode(2 * pixels - 1).latent_dist
        latents = posterior.sample() if sample else posterior.mode()
    return latents * vae.config.scaling_factor


def make_pipeline(model: LatentDiffusion, vae, tokenizer, with_adapter: bool = True):
    """The StableDiffusionPipeline the saved folder will load as, assembled in memory (for evaluating
    during training; `save_pipeline` writes it). Sampling: DPM-Solver++ on the training schedule."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    unet = model.unet
    if not with_adapter:
        unet = copy.deepcopy(unet)
        detach_ip_adapter(unet)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=model.text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DPMSolverMultistepScheduler.from_config(model.noise.config, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=model.image_encoder,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(directory: Path, model: LatentDiffusion, vae, tokenizer) -> None:
    """`directory`: Stable Diffusion's layout (model_index.json, unet/, vae/, text_encoder/,
    tokenizer/, scheduler/, image_encoder/) + ip_adapter/ip_adapter.safetensors + vlgpt.json (the
    default steps and guidance): what `--decoder PATH` loads."""
    from safetensors.torch import save_file

    model = copy.deepcopy(model).float().eval()
    adapter = detach_ip_adapter(model.unet)
    make_pipeline(model, copy.deepcopy(vae).float(), tokenizer).save_pretrained(directory)
    (directory / ADAPTER_DIR).mkdir()
    save_file(adapter, str(directory / ADAPTER_DIR / ADAPTER_FILE))
    settings = {"steps": model.config.steps, "guidance": model.config.guidance}
    (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")


def decoder_tokenizer(texts: list[str], config: DiffusionConfig):
    """The decoder's own tokenizer: a BPE over the data's captions (vlgpt's), as a transformers
    tokenizer that writes [BOS] caption [EOS] and pads to `text_length` (CLIP's form)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from ..core.text_tokenizer import BOS, EOS, PAD, UNK, TextTokenizer

    bpe = TextTokenizer.train(texts, config.vocab_size).tokenizer
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bpe.token_to_id(BOS)), (EOS, bpe.token_to_id(EOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=config.text_length,
    )


def caption_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """Ids as the pipeline's `encode_prompt` makes them: padded to the tokenizer's length, cut there."""
    return tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def parameters_m(module: nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6
