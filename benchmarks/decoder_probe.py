"""How fast does a pixel decoder learn to redraw Shapes scenes when it reads an encoder's 8x8 grid
directly (no image tokenizer in between)? A probe of the decoder and its loss, apart from the codec.

    python benchmarks/decoder_probe.py --steps 300 --encoder conv [--set decoder.KEY=VALUE ...]
    python benchmarks/decoder_probe.py --steps 300 --encoder vit --clip RUN   # the run's CLIP ViT, tuned

`conv`: a fresh stride-2 conv stem (the ViT's, models/vit.py) straight to the grid; `vit`: a copy of
RUN's CLIP image tower, fine-tuned with the decoder; `vit-fresh`: the same tower from random weights.
Same data, AdamW, warmup and cosine schedule as the decoder stage. Prints one JSON line: the judge's
agreement on 200 val scenes and the seconds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time

import torch

from vlgpt.core.config import PixelDecoderModelConfig, TokenizerPairConfig
from vlgpt.core.overrides import apply_overrides
from vlgpt.core.presets import preset
from vlgpt.data.images import pixels_from, to_pil
from vlgpt.data.sources import WorldSource
from vlgpt.models.loading import load_clip
from vlgpt.models.pixel_decoder import build_pixel_decoder
from vlgpt.models.tokenizer_pair import TokenizerPair
from vlgpt.models.vit import PIXEL_MEAN, PIXEL_STD, VisionTransformer, conv_stem
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.render import render_grid

KEYS = ("count", "colors", "shapes", "sizes", "relations", "exact")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--encoder", choices=("conv", "vit", "vit-fresh"), default="conv")
    parser.add_argument("--codec", choices=("none", "fresh"), default="none", help="fresh: a new one between")
    parser.add_argument("--clip", help="run folder whose CLIP ViT --encoder vit starts from")
    parser.add_argument(
        "--set", action="append", default=[], help="model override, e.g. decoder.edge_weight=2"
    )
    parser.add_argument("--n", type=int, default=200, help="val scenes judged")
    parser.add_argument("--png", help="write 16 val scenes and their reconstructions here")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = apply_overrides(preset("small").model, args.set)
    grid, size, width = model.clip.condition_grid, model.clip.vision.image_size, model.clip.embed_dim
    decoder = build_pixel_decoder(PixelDecoderModelConfig(model.decoder, width, size, grid))
    if args.encoder == "vit-fresh":  # the CLIP image tower's architecture, from random weights
        encoder = VisionTransformer(model.clip.vision)
    elif args.encoder == "vit":
        if not args.clip:
            parser.error("--encoder vit needs --clip RUN (a run with a trained clip stage)")
        encoder = copy.deepcopy(load_clip(args.clip)[0].vision).requires_grad_(True).train()
    else:
        stem = conv_stem(width, size // grid)
        mean, std = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), torch.tensor(PIXEL_STD).view(1, 3, 1, 1)

        class ConvEncoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = stem

            def forward(self, x):  # [B, 1 + G^2, width]: the grid's mean as the pooled token, then the grid
                cells = self.stem((x - mean) / std).flatten(2).transpose(1, 2)
                return torch.cat([cells.mean(1, keepdim=True), cells], 1)

        encoder = ConvEncoder()

    # --codec: the image tokenizer and detokenizer in between, fresh, as the decoder stage's chain has them
    pair = TokenizerPair(
        TokenizerPairConfig(model.tokenizer, width, model.clip.num_condition_tokens, width, grid * grid)
    )

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        tokens = encoder(x)
        if args.codec == "none":
            return decoder(tokens, tokens[:, 0])
        z_v, z_t = pair.detokenizer(pair.tokenizer(tokens))
        return decoder(z_v, z_t)

    modules = (encoder, decoder) if args.codec == "none" else (encoder, pair, decoder)
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    source, val = WorldSource("train", size), WorldSource("val", size)
    start = time.perf_counter()
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / 30)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * cosine
        x = pixels_from([source.get(step * args.batch + i)[0] for i in range(args.batch)])
        loss, _ = decoder.pixel_loss(reconstruct(x), x)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    seconds = time.perf_counter() - start
    encoder.eval(), pair.eval(), decoder.eval()
    agreement = []
    with torch.no_grad():
        for first in range(0, args.n, 50):
            x = pixels_from([val.get(i)[0] for i in range(first, min(first + 50, args.n))])
            for i, image in enumerate(reconstruct(x).clamp(0, 1)):
                agreement.append(compare_scenes(judge(to_pil(image)), val.scene(first + i)))
        if args.png:
            x = pixels_from([val.get(i)[0] for i in range(16)])
            pairs = [to_pil(im) for two in zip(x, reconstruct(x).clamp(0, 1)) for im in two]
            render_grid(pairs, columns=8, scale=3).save(args.png)
    result = {k: round(sum(a[k] for a in agreement) / len(agreement), 3) for k in KEYS}
    result.update(
        encoder=args.encoder,
        codec=args.codec,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        overrides=args.set,
        train_seconds=round(seconds, 1),
        decoder=dataclasses.asdict(model.decoder),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
