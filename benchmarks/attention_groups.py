"""Training step time of the LM stages with attention on length groups of rows, against one padded
[B, T_max] layout, on the stages' own batches.

    python benchmarks/attention_groups.py --run runs/demo [--groups 1,4,8] [--batches 8] [--rounds 3]

A run's codec (and pretrain, for instruct) makes real pretrain and instruct batches; each setting
times the same batches (forward, loss, backward, AdamW step), settings alternating, best round of
`--rounds`. The outputs are identical (tests/test_transformer.py); only the time differs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vlgpt.models import transformer
from vlgpt.train import get_stage, resolve_configs
from vlgpt.train.stages import StageInputs


def step_times(stage: str, run: Path, groups: list[int], batches: int, rounds: int) -> dict:
    model_config, train = resolve_configs(stage, "small")
    inputs = StageInputs(model_config, "world", seed=0, eval_size=30, val_data=None)
    task = get_stage(stage).from_run(run, inputs, train, None)
    optimizer = torch.optim.AdamW(task.model.parameters(), lr=1e-6)
    data = [task.batch(k * train.batch_size, train.batch_size) for k in range(batches)]
    best = {g: float("inf") for g in groups}
    for _ in range(rounds):
        for g in groups:
            transformer.ATTENTION_GROUPS = g
            start = time.perf_counter()
            for batch in data:
                loss, _ = task.loss(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            best[g] = min(best[g], (time.perf_counter() - start) / batches)
    real = sum(int(b["attention_mask"].sum()) for b in data)
    laid = sum(b["attention_mask"].numel() for b in data)
    return {
        "stage": stage,
        "padding_share": round(1 - real / laid, 3),
        "seconds_per_step": {g: round(t, 4) for g, t in best.items()},
        "speedup_vs_1": {g: round(best[groups[0]] / t, 2) for g, t in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder with clip, tokenizer and pretrain")
    parser.add_argument("--groups", default="1,4,8")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    groups = [int(g) for g in args.groups.split(",")]
    for stage in ("pretrain", "instruct"):
        print(json.dumps(step_times(stage, Path(args.run), groups, args.batches, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
