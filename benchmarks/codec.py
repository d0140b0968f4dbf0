"""The image tokenizer-detokenizer on the small preset: training time, retrieval, reconstruction,
and the paper's Table 4 ablation (supervise the detokenizer with e_v only, e_t only, or both; every
row decodes with the run's own decoder, as the paper keeps one frozen decoder).

    python benchmarks/codec.py --run runs/bench-codec [--ablation]

Prints one JSON line. A finished stage in --run is reused (delete the folder to retrain all).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from vlgpt.eval.reconstruction import evaluate_reconstruction
from vlgpt.train import train_stage


def timed_stage(stage: str, run: Path, **kwargs) -> float:
    if (run / stage / "model" / "metrics.json").is_file():
        return (
            json.loads((run / f"{stage}.seconds").read_text()) if (run / f"{stage}.seconds").exists() else 0.0
        )
    start = time.perf_counter()
    train_stage(stage, run, preset_name="small", progress=False, **kwargs)
    seconds = time.perf_counter() - start
    (run / f"{stage}.seconds").write_text(json.dumps(seconds))
    return seconds


def headline(metrics: dict) -> dict:
    keep = ("judge_count", "judge_colors", "judge_shapes", "judge_kinds", "judge_relations", "judge_exact")
    out = {k: round(metrics[k]["mean"], 3) for k in keep}
    out["image_to_text_r1"] = round(metrics["image_to_text_r1"], 3)
    out["text_to_image_r1"] = round(metrics["text_to_image_r1"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-codec")
    parser.add_argument("--n", type=int, default=500, help="validation scenes evaluated")
    parser.add_argument(
        "--ablation", action="store_true", help="also train the tokenizer with e_v only / e_t only"
    )
    args = parser.parse_args()
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    seconds = {stage: round(timed_stage(stage, run), 1) for stage in ("clip", "tokenizer", "decoder")}
    result = {
        "benchmark": "codec",
        "preset": "small",
        "train_seconds": seconds,
        "train_seconds_total": round(sum(seconds.values()), 1),
        **headline(evaluate_reconstruction(run, n=args.n)),
    }
    if args.ablation:
        rows = {}
        for name, weights in (("e_v_only", (1.0, 0.0)), ("e_t_only", (0.0, 1.0)), ("both", (1.0, 1.0))):
            variant = run / f"ablation-{name}"
            variant.mkdir(exist_ok=True)
            # Shared CLIP and decoder (the run's own): only the tokenizer's supervision changes. The
            # decoder stage's tuned copies of the CLIP and tokenizer (decoder.train_codec) stay out,
            # or they, not the variant's tokenizer, would make z: each row decodes the frozen CLIP's
            # features through its own tokenizer with the run's pixel decoder, the paper's setting.
            for stage in ("clip", "decoder"):
                if not (variant / stage).exists():
                    shutil.copytree(
                        run / stage / "model",
                        variant / stage / "model",
                        ignore=lambda folder, names: [n for n in names if n in ("clip", "tokenizer")],
                    )
            timed_stage(
                "tokenizer",
                variant,
                model_overrides=(
                    f"tokenizer.weight_image={weights[0]}",
                    f"tokenizer.weight_text={weights[1]}",
                ),
            )
            tokenizer_eval = json.loads((variant / "tokenizer" / "model" / "metrics.json").read_text())
            rows[name] = {
                **headline(evaluate_reconstruction(variant, n=args.n)),
                **{k: round(tokenizer_eval[k], 4) for k in ("mse_v", "mse_t", "cosine_t", "z_t_caption_r1")},
            }
        result["table4_ablation"] = rows
    print(json.dumps(result))


if __name__ == "__main__":
    main()
