"""Learning curves of a trained stage: every periodic evaluation against the samples seen so far.

A stage trained with `--eval-every K` logs its evaluation every K steps to RUN/STAGE/metrics.jsonl;
this prints them as one table (samples = step x batch size x grad_accum, read from the stage's
config.yaml), so a curve can be read past its bend instead of extrapolated from its start.

python benchmarks/curves.py runs/demo/clip [runs/V2/clip ...] [--keys caption_f1,probe_shape]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def curve(stage_dir: Path) -> tuple[int, list[dict]]:
    config = yaml.safe_load((stage_dir / "config.yaml").read_text())["train"]
    per_step = config["batch_size"] * config["grad_accum"]
    rows = []
    for line in (stage_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        evals = {k[len("eval_") :]: v for k, v in record.items() if k.startswith("eval_")}
        if evals:
            rows.append({"step": record["step"], "samples": record["step"] * per_step, **evals})
    return per_step, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stages", nargs="+", type=Path, help="stage folders, e.g. runs/demo/clip")
    parser.add_argument("--keys", default="", help="comma-separated metrics to show (default: all)")
    args = parser.parse_args()
    for stage_dir in args.stages:
        _, rows = curve(stage_dir)
        if not rows:
            print(f"{stage_dir}: no periodic evaluation logged (train with --eval-every)")
            continue
        keys = [k for k in args.keys.split(",") if k] or [k for k in rows[0] if k not in ("step", "samples")]
        print(f"\n{stage_dir}")
        print("| samples | step | " + " | ".join(keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        for row in rows:
            cells = [f"{row[k]:.3f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
            print(f"| {row['samples']} | {row['step']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
