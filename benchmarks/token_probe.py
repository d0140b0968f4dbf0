"""Does each link of the image chain keep what the tower saw? Per-object linear probes of shape,
colour, size and place (`vlgpt.eval.probes`) on the tower's grid, on e_v (its projected patch
tokens, the detokenizer's target), on z (the N image embeddings the image tokenizer makes), on z_v
(the detokenizer's reconstruction of e_v from z) and on the z the transformer reads: made by the
decoder stage's tuned copies of the tower and tokenizer, where `decoder.train_codec` made them.

Chance: shape 1/6, colour 1/10, size 1/2, place 1/2. The scenes are training-split scenes from a
seed range no stage samples in the demo's budget, so no row was fitted by the chain.

python benchmarks/token_probe.py --run runs/demo [--scenes 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlgpt.eval.probes import object_rows, probe_objects
from vlgpt.image_codec import ImageCodecPipeline
from vlgpt.loading import load_clip, load_tokenizer_pair
from vlgpt.world.dataset import ShapesWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder with clip/ and tokenizer/")
    parser.add_argument("--scenes", type=int, default=1000)
    args = parser.parse_args()
    run = Path(args.run)
    clip, _ = load_clip(run / "clip" / "model")
    clip.eval()
    world = ShapesWorld("train", seed=500_000)
    scenes = [world.scene(i) for i in range(args.scenes)]
    links = {
        "tower grid": lambda p: clip.image_features(p)[:, 1:],
        "e_v": lambda p: clip.image_embeddings(p)[:, 1:],
    }
    if (run / "tokenizer" / "model").is_dir():
        pair = load_tokenizer_pair(run / "tokenizer" / "model").eval()
        links["z"] = lambda p: pair.tokenizer(clip.image_features(p))
        links["z_v"] = lambda p: pair.detokenizer(pair.tokenizer(clip.image_features(p)))[0][:, 1:]
    if (run / "decoder" / "model" / "tokenizer").is_dir():  # decoder.train_codec: the tuned copies
        codec = ImageCodecPipeline.load(run)
        links["z, tuned (read by the LM)"] = lambda p: codec.codec.tokenizer(codec.clip.image_features(p))
    result = {}
    for name, encode in links.items():
        rows = object_rows(encode, scenes)  # features without gradients; the probes fit their own
        result[name] = {k: round(v, 3) for k, v in probe_objects(*rows).items()}
        print(f"{name:>26}: {result[name]}  ({len(rows[1])} objects)", flush=True)
    print(json.dumps({"benchmark": "token_probe", "run": str(run), **result}))


if __name__ == "__main__":
    main()
