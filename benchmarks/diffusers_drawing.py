"""What one drawing costs through a diffusers pipeline (`--decoder PATH`), by picture size and steps.

    python benchmarks/diffusers_drawing.py                       # 64 px and 512 px, 10 / 25 / 50 steps
    python benchmarks/diffusers_drawing.py --sizes 512 --steps 25 --device cuda --dtype bf16

The pipeline is random and tiny where it can be (a 2-level UNet of 32 / 64 channels, a CLIP text
encoder of width 32, an IP-Adapter), but it has Stable Diffusion's shape where the cost lives: a VAE
that downsamples by 8, so a 512 px picture is a 64 x 64 latent that the UNet denoises at every step,
guidance > 1 (two UNet passes a step, batched), and the VAE decoding once at the end. Each figure is
the median of `--repeats` drawings through `DiffusersDecoder.decode`, after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from vlgpt.core.devices import resolve
from vlgpt.models.diffusers_decoder import DiffusersDecoder


def write_pipeline(folder: Path, size: int) -> None:
    """A random SD-shaped pipeline drawing `size` px pictures (latents size / 8), with an IP-Adapter."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    alphabet = sorted(ByteLevel.alphabet())
    words = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {word: i for i, word in enumerate(words)}
    text = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
    )
    unet = UNet2DConditionModel(
        sample_size=size // 8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=CLIPVisionModelWithProjection(vision),
        requires_safety_checker=False,
    ).save_pretrained(folder)
    adapter = {
        "image_proj.proj.weight": 0.02 * torch.randn(4 * 32, 32),
        "image_proj.proj.bias": torch.zeros(4 * 32),
        "image_proj.norm.weight": torch.ones(32),
        "image_proj.norm.bias": torch.zeros(32),
    }
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    for i, name in enumerate(names):
        width = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
        adapter[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = 0.02 * torch.randn(width, 32)
        adapter[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = 0.02 * torch.randn(width, 32)
    os.makedirs(folder / "ip_adapter")
    save_file(adapter, folder / "ip_adapter" / "ip_adapter.safetensors")


def time_drawings(decoder: DiffusersDecoder, steps: int, guidance: float, repeats: int) -> float:
    z_t = decoder.text_conditions(["a red circle to the left of a blue star"])
    z_v = decoder.image_conditions(torch.rand(1, 3, 64, 64))
    decoder.decode(z_v, z_t, steps=2, guidance=guidance)  # warm-up
    seconds = []
    for seed in range(repeats):
        if decoder.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        decoder.decode(z_v, z_t, steps=steps, guidance=guidance, seed=seed)
        if decoder.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    device, dtype = resolve(args.device, args.dtype)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = Path(tmp) / f"sd-{size}"
            write_pipeline(folder, size)
            decoder = DiffusersDecoder(folder, device, dtype)
            for steps in args.steps:
                seconds = time_drawings(decoder, steps, args.guidance, args.repeats)
                rows.append({"size": size, "steps": steps, "seconds": round(seconds, 4)})
                per_step = seconds / steps * 1e3
                print(f"{size:4d} px  {steps:3d} steps  {seconds:8.3f} s/drawing  ({per_step:.1f} ms/step)")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(json.dumps({"device": device_name, "dtype": args.dtype, "guidance": args.guidance, "rows": rows}))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": device_name, "dtype": args.dtype, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
