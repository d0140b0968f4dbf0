"""Pretrain-stage training throughput and model FLOP utilisation, vlgpt vs the Hugging Face peer.

    python benchmarks/train_speed.py [--preset small] [--threads 0] [--rounds 7] [--precisions fp32,bf16]

What is compared: one optimizer step (forward, CE + MSE losses, backward, gradient clipping,
fused AdamW: the HF Trainer's default `adamw_torch_fused`) of VL-GPT's language model against
`benchmarks/hf_peer.py` (LlamaForCausalLM + projector + regression head at the same width, depth,
heads, MLP, vocabulary, untied), on identical real pretrain batches (the pretrain stage's own
sampler, images through the run's frozen tokenizer, built once before timing), with the same
weights (the losses are checked equal), precision (fp32, and bf16 autocast) and threads. Steps
alternate ours, peer, ours, peer; figures are medians.

Also measured: MFU (model FLOPs of the real tokens, `harness.training_flops`, over this machine's
matmul peak measured in this run, and GEMM throughput at the model's own shapes); where a step's
time goes (profile by kind of work); the frozen image side (CLIP ViT + image tokenizer, batched,
vs HF CLIPVisionModel at the same ViT sizes on identical pixels); the pretrain stage end to end
through the engine (data, rendering and tokenization included). One JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    interleaved,
    load,
    machine,
    make_untrained_run,
    matmul_tflops,
    matmul_tflops_at,
    profile_split,
    training_flops,
)
from hf_peer import HFPeer, check_same_math

from vlgpt.core.presets import preset
from vlgpt.data.images import pixels_from
from vlgpt.train.engine import Trainer, make_optimizer, resolve_precision
from vlgpt.train.stages import StageInputs
from vlgpt.train.stages.pretrain import PretrainStage
from vlgpt.world.render import render


def make_step(model, optimizer, batches, clip: float, autocast_dtype=None):
    position = [0]

    def step() -> None:
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def image_side(stage: PretrainStage, batch_size: int, rounds: int, dtype) -> dict:
    """Frozen image encoding, images/s, in the precision `auto` picks, on identical pixels: our ViT
    alone and our ViT + image tokenizer (what the pretrain stage runs) vs HF CLIPVisionModel at the
    same ViT sizes (width, depth, heads, MLP, patch and image size; random weights)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision = stage.codec.clip.config.vision
    hf = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=vision.width,
            intermediate_size=int(vision.width * vision.mlp_ratio),
            num_hidden_layers=vision.depth,
            num_attention_heads=vision.heads,
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            hidden_act="gelu",
            attn_implementation="sdpa",
        )
    ).eval()
    pixels = pixels_from([np.asarray(render(stage.world.scene(i))) for i in range(batch_size)])
    clip, pair = stage.codec.clip, stage.codec.pair
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        timing = interleaved(
            {
                "ours_vit": lambda: clip.image_features(pixels),
                "ours_vit_and_tokenizer": lambda: pair.tokenizer(clip.image_features(pixels)),
                "peer_clip_vision_model": lambda: hf(pixel_values=pixels),
            },
            rounds,
        )
    return {
        "batch_size": batch_size,
        "precision": "bf16" if dtype is not None else "fp32",
        **{name: round(batch_size / t["median_s"], 1) for name, t in timing.items()},
        "vit_speedup_vs_peer": round(timing["peer_clip_vision_model"]["time_vs_first"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both (0: all cores)")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the preset's pretrain batch size")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches cycled through")
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per model, alternating")
    parser.add_argument("--engine-steps", type=int, default=4, help="steps through the real engine (0: skip)")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="comma-separated: fp32 and/or bf16 (autocast)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = preset(args.preset).train["pretrain"]
    batch_size = args.batch_size or recipe.batch_size
    load_before = load()
    auto = resolve_precision("auto", torch.device("cpu"))

    with tempfile.TemporaryDirectory(prefix="vlgpt-bench-train-") as tmp:
        model_config = make_untrained_run(Path(tmp), args.preset)
        stage = PretrainStage(StageInputs(model_config, "world", seed=0, eval_size=8), run=Path(tmp))
        start = time.perf_counter()
        batches = [stage.batch(i * batch_size, batch_size) for i in range(args.batches)]
        data_s = (time.perf_counter() - start) / args.batches
        model = stage.model.train()
        tok = stage.tokenizer
        peer = HFPeer(model, {"pad": tok.pad_id, "bos": tok.bos_id, "eos": tok.eos_id}).train()
        loss_gap = check_same_math(model, peer, batches[0])
        peaks = {"fp32": matmul_tflops(torch.float32), "bf16": matmul_tflops(torch.bfloat16)}
        tokens = statistics.mean(int(b["attention_mask"].sum()) for b in batches)
        positions = statistics.mean(b["ids"].numel() for b in batches)
        images = statistics.mean(int(b["is_image"].sum()) // model.config.num_image_tokens for b in batches)
        flops = statistics.mean(training_flops(model, b) for b in batches)
        result = {
            "benchmark": "train_speed",
            "preset": args.preset,
            **machine(),
            "threads": torch.get_num_threads(),
            "precision_auto_picks": "bf16" if auto is not None else "fp32",
            "batch_size": batch_size,
            "real_tokens_per_batch": round(tokens, 1),
            "padded_positions_per_batch": round(positions, 1),
            "images_per_batch": round(images, 1),
            "loss_gap_same_weights": loss_gap,
            "gflop_per_step": round(flops / 1e9, 2),
        }
        for precision in args.precisions.split(","):
            dtype = torch.bfloat16 if precision == "bf16" else None
            steps = {
                "ours": make_step(model, make_optimizer(model, recipe), batches, recipe.grad_clip, dtype),
                "peer": make_step(peer, make_optimizer(peer, recipe), batches, recipe.grad_clip, dtype),
            }
            timing = interleaved(steps, args.rounds)
            row = {}
            for name, t in timing.items():
                achieved = flops / t["median_s"] / 1e12
                row[name] = {
                    "step_ms": round(1000 * t["median_s"], 1),
                    "tokens_per_s": round(tokens / t["median_s"]),
                    "images_per_s": round(images / t["median_s"], 1),
                    "samples_per_s": round(batch_size / t["median_s"], 1),
                    "tflops": round(achieved, 4),
                }
            row["speedup_vs_peer"] = round(timing["peer"]["time_vs_first"], 3)
            result[precision] = row
        peaks = {
            k: max(v, matmul_tflops(torch.float32 if k == "fp32" else torch.bfloat16))
            for k, v in peaks.items()
        }
        result["peak_tflops"] = {k: round(v, 4) for k, v in peaks.items()}
        for precision in args.precisions.split(","):  # MFU over the higher of the two peak measurements
            for name in ("ours", "peer"):
                result[precision][name]["mfu"] = round(
                    result[precision][name]["tflops"] / peaks[precision], 4
                )
        # Why MFU is what it is: the model's own GEMM shapes, and where a step's time goes.
        lm = model.config.lm
        rows = int(tokens)
        result["gemm_tflops_at_model_shapes"] = {
            precision: {
                f"{rows}x{k}x{n}": round(
                    matmul_tflops_at(torch.bfloat16 if precision == "bf16" else torch.float32, rows, k, n), 4
                )
                for k, n in ((lm.width, 3 * lm.width), (lm.width, lm.mlp_hidden), (lm.mlp_hidden, lm.width))
            }
            for precision in args.precisions.split(",")
        }
        picked = "bf16" if auto is not None else "fp32"
        result["profile_ms_per_step"] = {
            name: profile_split(make_step(m, make_optimizer(m, recipe), batches[:1], recipe.grad_clip, auto))
            for name, m in (("ours", model), ("peer", peer))
        } | {"precision": picked}
        result["data_ms_per_batch"] = round(1000 * data_s, 1)
        result["image_side"] = image_side(stage, batch_size * 2, args.rounds, auto)

        if args.engine_steps:  # the pretrain stage as `vlgpt train pretrain` runs it, data included
            trainer = Trainer(stage, recipe, Path(tmp) / "pretrain", progress=False)
            trainer.prepare()
            trainer.train_step()
            start = time.perf_counter()
            for _ in range(args.engine_steps):
                trainer.train_step()
            elapsed = (time.perf_counter() - start) / args.engine_steps
            result["engine_end_to_end"] = {
                "step_ms": round(1000 * elapsed, 1),
                "samples_per_s": round(batch_size / elapsed, 1),
            }
    result["load_avg_1min"] = [load_before, load()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
