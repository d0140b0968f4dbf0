"""The named presets: a model size and a training recipe for each stage, as data.

    preset("small").model            # ModelConfig
    preset("small").train["clip"]    # TrainConfig of the clip stage

`tiny` is for tests (seconds a stage), `small` for the demo and the benchmarks on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import (
    AutoencoderConfig,
    ClipConfig,
    ConfigError,
    DiffusionConfig,
    ImageTokenizerConfig,
    LanguageModelConfig,
    ModelConfig,
    PixelDecoderConfig,
    TextConfig,
    TrainConfig,
    VisionConfig,
)

STAGES = ("clip", "vae", "diffusion", "tokenizer", "decoder", "pretrain", "instruct")


@dataclass(frozen=True)
class Preset:
    """A named model size with a training recipe for each stage."""

    model: ModelConfig
    train: dict[str, TrainConfig]


def _train(**overrides) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), **overrides)


PRESETS: dict[str, Preset] = {
    # For tests: seconds per stage.
    "tiny": Preset(
        ModelConfig(
            ClipConfig(
                VisionConfig(kind="conv", image_size=32, patch_size=8, width=32, depth=1, heads=2),
                TextConfig(vocab_size=512, context_length=40, width=32, depth=1, heads=2),
                embed_dim=32,
                condition_grid=2,
                caption_weight=1.0,
                caption_depth=1,
            ),
            ImageTokenizerConfig(num_tokens=4, token_dim=32, width=32, depth=1, detokenizer_depth=1, heads=2),
            PixelDecoderConfig(channels=32),
            LanguageModelConfig(width=32, depth=1, heads=2, mlp_hidden=64, max_seq_len=160),
            AutoencoderConfig(channels="16,16", latent_channels=4),
            DiffusionConfig(
                channels="16,32",
                attention="0,1",
                attention_head_dim=8,
                cross_attention_dim=32,
                text_depth=1,
                text_heads=2,
                text_length=24,
                vocab_size=512,
                image_depth=1,
                image_width=32,
                image_dim=32,
                steps=4,
            ),
        ),
        {
            "clip": _train(steps=20, batch_size=16, warmup_steps=2, save_every=10, eval_size=32, log_every=5),
            "vae": _train(steps=20, batch_size=16, warmup_steps=2, save_every=10, eval_size=24, log_every=5),
            "diffusion": _train(
                steps=20, batch_size=16, warmup_steps=2, save_every=10, eval_size=24, log_every=5
            ),
            "tokenizer": _train(
                steps=20, batch_size=16, warmup_steps=2, save_every=10, eval_size=32, log_every=5
            ),
            "decoder": _train(
                steps=20, batch_size=16, warmup_steps=2, save_every=10, eval_size=32, log_every=5
            ),
            "pretrain": _train(
                steps=20, batch_size=8, warmup_steps=2, save_every=10, eval_size=8, log_every=5
            ),
            "instruct": _train(
                steps=20,
                batch_size=8,
                warmup_steps=2,
                save_every=10,
                eval_size=8,
                log_every=5,
                text_loss="sqrt",
            ),
        },
    ),
    # The demo and the benchmarks: a few minutes per stage on 2 CPU cores.
    "small": Preset(
        # The transformer at width 128 (0.8M parameters): reading images is limited by samples seen,
        # and a quarter-size transformer learns as much per sample and runs 1.4x faster, so 1400
        # steps fit the time 1000 took at width 256 (docs/BENCHMARKS.md, eighth round).
        # The vision stage reads: a convolutional tower trained by captioning (CapPa, through a
        # one-block caption decoder) beside InfoNCE passes the phase transition where shape becomes
        # readable (800-1,600 steps), where a contrastive ViT never did; 2,400 steps end past it,
        # not on it (shape probe 0.91, not 0.78-0.89 by the draw; docs/BENCHMARKS.md, "Learn to see").
        ModelConfig(
            clip=ClipConfig(vision=VisionConfig(kind="conv"), caption_weight=1.0, caption_depth=1),
            lm=LanguageModelConfig(width=128, mlp_hidden=344),
        ),
        {
            "clip": _train(steps=2400, batch_size=64, lr=2e-3, warmup_steps=30, save_every=200),
            # The world decoder (trained once, shipped, used frozen through --decoder): sizes and steps
            # from its learning curves (docs/BENCHMARKS.md, "The world's own decoder").
            "vae": _train(steps=3000, batch_size=32, lr=1e-3, warmup_steps=50, save_every=250, eval_size=300),
            "diffusion": _train(
                steps=8500,
                batch_size=32,
                lr=1e-3,
                warmup_steps=100,
                save_every=250,
                eval_every=1500,
                eval_size=120,
                weight_decay=0.0,
            ),
            "tokenizer": _train(steps=300, batch_size=64, lr=2e-3, warmup_steps=30, save_every=100),
            # Shapes arrive late and want steps more than batch (benchmarks/decoder_probe.py).
            # Drawing is the next issue's: 2,000 steps leave the transformer the minutes reading needs.
            "decoder": _train(steps=2000, batch_size=8, lr=1e-3, warmup_steps=30, save_every=200),
            # Batch 32: the transformer reads at the pace of captions seen (docs/BENCHMARKS.md).
            "pretrain": _train(
                steps=1000, batch_size=32, lr=1e-3, warmup_steps=30, save_every=200, eval_size=30
            ),
            # A reply of n text targets weighs sqrt(n) in the loss, not n: the answers' share rises
            # from a sixth to about a half, and binding (which colour goes with which shape) forms
            # within the stage where per-token weighting left it at chance; counting each reply once
            # binds as well and costs captions 0.08 F1 more (docs/BENCHMARKS.md, "the answers'
            # share of the loss").
            "instruct": _train(
                steps=1100,
                batch_size=32,
                lr=1e-3,
                warmup_steps=30,
                save_every=200,
                eval_size=30,
                text_loss="sqrt",
            ),
        },
    ),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# --- (de)serialisation and overrides -----------------------------------------------------------
