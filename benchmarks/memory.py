"""Peak resident memory of training and inference, per preset, each in a fresh process.

    python benchmarks/memory.py [--presets tiny,small] [--steps 3] [--peer]

Training: the pretrain stage's model, fused AdamW and `--steps` steps on its real batches (the
run's frozen image codec loaded, as `vlgpt train pretrain` has it), in the precision `auto` picks.
Inference: a 32-token caption through `InterleavedGenerator` with the codec loaded. With --peer, the HF peer
(benchmarks/hf_peer.py) does the same training steps in its own process. Each figure is the
process's peak RSS (`ru_maxrss`), and that minus the RSS right after the imports (torch, and
transformers for the peer): the work's own share, first-use kernel and thread-pool set-up included.
One JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def current_rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, preset_name: str, run: str, steps: int, threads: int) -> dict:
    """Runs in the measured process, on the untrained run the parent wrote."""
    import torch

    sys.path.insert(0, str(HERE))
    import numpy as np
    from harness import caption_prompt, peak_rss_mib

    from vlgpt.core.config import VLGPTConfig
    from vlgpt.core.presets import preset
    from vlgpt.inference.generate import InterleavedGenerator, SamplingConfig
    from vlgpt.inference.image_codec import ImageCodec
    from vlgpt.models.vlgpt import VLGPT
    from vlgpt.train.engine import make_optimizer, resolve_precision
    from vlgpt.train.stages import StageInputs
    from vlgpt.train.stages.pretrain import PretrainStage
    from vlgpt.world.dataset import ShapesWorld
    from vlgpt.world.render import render

    if mode == "train_peer":
        import hf_peer  # noqa: F401  (transformers counts in the baseline)
    if threads:
        torch.set_num_threads(threads)
    baseline = current_rss_mib()
    model_config = preset(preset_name).model
    if mode == "infer":
        codec = ImageCodec.load(run)
        tok = codec.text_tokenizer
        model = VLGPT(VLGPTConfig(tok.vocab_size, codec.num_tokens, codec.token_dim, model_config.lm)).eval()
        world = ShapesWorld("test", codec.image_size, codec.image_size)
        embeddings = codec.encode([np.asarray(render(world.scene(0)))])[0]
        InterleavedGenerator(model, tok, codec).generate(
            caption_prompt(embeddings), SamplingConfig(max_new_tokens=32)
        )
    else:
        recipe = preset(preset_name).train["pretrain"]
        stage = PretrainStage(StageInputs(model_config, "world", seed=0, eval_size=8), run=Path(run))
        model = stage.model.train()
        if mode == "train_peer":
            from hf_peer import HFPeer

            model = HFPeer(model).train()
        optimizer = make_optimizer(model, recipe)
        dtype = resolve_precision("auto", torch.device("cpu"))
        for step in range(steps):
            batch = stage.batch(step * recipe.batch_size, recipe.batch_size)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(batch)["loss"]
            loss.backward()
            optimizer.step()
    peak = peak_rss_mib()
    return {
        "peak_rss_mib": round(peak),
        "after_imports_mib": round(baseline),
        "work_mib": round(peak - baseline),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--peer", action="store_true", help="also the HF peer's training steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.preset, args.run, args.steps, args.threads)))
        return
    sys.path.insert(0, str(HERE))
    from harness import load, make_untrained_run

    result = {"benchmark": "memory", "steps": args.steps, "load_avg_1min": load()}
    modes = ["train", "infer"] + (["train_peer"] if args.peer else [])
    for preset_name in args.presets.split(","):
        run = tempfile.mkdtemp(prefix="vlgpt-bench-mem-")
        make_untrained_run(Path(run), preset_name)
        for mode in modes:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--preset",
                    preset_name,
                    "--run",
                    run,
                    "--steps",
                    str(args.steps),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(f"{mode} {preset_name} failed:\n{out.stderr[-3000:]}")
            result[f"{preset_name}_{mode}"] = json.loads(out.stdout.strip().splitlines()[-1])
        shutil.rmtree(run, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
