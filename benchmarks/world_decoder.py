"""The world decoder alone (a `--decoder` folder): GenEval from each prompt's own text, scenes redrawn
from their (e_v, e_t), two seeds; and its learning curve from the `diffusion` stage's log.

    python benchmarks/world_decoder.py pretrained/world-decoder --n 50 --scenes 300
    python benchmarks/world_decoder.py runs/world-decoder/diffusion/model --curve runs/world-decoder

Every figure sits beside its floor: `noise_floor` is what random pixels score on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlgpt.core.devices import resolve
from vlgpt.eval.decoder_eval import evaluate_decoder, headline
from vlgpt.eval.formatting import table
from vlgpt.models.diffusers_decoder import DiffusersDecoder


def curve(run: Path) -> list[dict]:
    """(samples, minutes, eval figures) at every evaluation the diffusion stage logged."""
    import yaml

    rows, samples, seconds, last_step = [], 0, 0.0, 0
    recipe = yaml.safe_load((run / "diffusion" / "config.yaml").read_text())["train"]
    batch = recipe["batch_size"] * recipe.get("grad_accum", 1)
    for line in (run / "diffusion" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "samples_per_s" in record:
            steps = record["step"] - last_step
            samples += steps * batch
            seconds += steps * batch / max(record["samples_per_s"], 1e-9)
            last_step = record["step"]
        figures = {k.removeprefix("eval_"): v for k, v in record.items() if k.startswith("eval_")}
        if figures:
            rows.append(
                {"step": record["step"], "samples": samples, "minutes": round(seconds / 60, 1), **figures}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("decoder", help="a diffusers decoder folder")
    parser.add_argument("--n", type=int, default=50, help="GenEval prompts per category")
    parser.add_argument("--scenes", type=int, default=300, help="validation scenes to redraw")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--curve", help="a run folder whose diffusion stage's evaluations to list")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    parser.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16")
    args = parser.parse_args()
    start = time.perf_counter()
    device, dtype = resolve(args.device, args.dtype)
    decoder = DiffusersDecoder(args.decoder, device=device, dtype=dtype)
    result = evaluate_decoder(
        decoder, args.n, args.scenes, args.size, steps=args.steps, guidance=args.guidance, n_seeds=50
    )
    result["seconds"] = round(time.perf_counter() - start, 1)
    steps, guidance = args.steps or decoder.steps, args.guidance or decoder.guidance
    print(table(f"{args.decoder} (steps {steps}, guidance {guidance})", headline(result)))
    if args.curve:
        for row in curve(Path(args.curve)):
            print(json.dumps(row))
        result["curve"] = curve(Path(args.curve))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
