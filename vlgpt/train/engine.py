"""The training loop every stage shares, in one process or many (torchrun; see distributed.py).

AdamW with warmup + cosine decay, optional bf16 autocast, gradient accumulation and clipping, a
non-finite guard, a progress bar, JSONL + TensorBoard metrics, periodic evaluation, atomic
checkpoints and exact resume. A stage (`stages/base.py`'s `Stage`: model, batches, loss, evaluation,
export) supplies the task; the engine owns everything else.

Batches: one optimizer step consumes a global batch of batch_size x grad_accum x world_size
consecutive samples of the task's stream, starting at the data position; rank r takes the r-th
contiguous slice and cuts it into grad_accum micro-batches. With one process this is the loop it
always was; with N processes at grad_accum A it computes what one process computes at grad_accum
N x A (DDP averages the ranks' gradients as accumulation averages micro-batches).

Checkpoints: `checkpoints/step-000100/` holds `model.safetensors` (trainable weights; under FSDP a
sharded DCP checkpoint `sharded/` of weights and AdamW state instead), `state.pt` (optimizer,
scheduler, every rank's torch RNG; loaded with weights_only=True), `state.json` (step, data position,
every rank's python/numpy RNG, counters) and, written last, `manifest.json`. A folder without a
manifest is an interrupted save: ignored, then cleaned. Only rank 0 logs and writes, except the
shards each rank writes for itself.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    atomic_dir,
    load_state,
    load_weights,
    save_state,
    weights_to_save,
)
from ..core.config import TrainConfig
from .distributed import (
    SHARDED_DIR,
    DataParallel,
    Distributed,
    load_sharded,
    peer_failure,
    save_sharded,
    shared_staging,
)

if TYPE_CHECKING:  # the contract every stage keeps; imported for the annotation only
    from .stages.base import Stage

MANIFEST = "manifest.json"
EXIT_PREEMPTED = 143


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, nothing to resume, folder taken); the message says why."""


class Preempted(SystemExit):
    """Raised after a SIGTERM/SIGINT: the step finished and a checkpoint was saved."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with AMX; elsewhere it is much slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16"):
        raise TrainingError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else None
    return torch.bfloat16 if precision == "bf16" else None


def lr_lambda(config: TrainConfig):
    def schedule(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return schedule


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms, biases, embeddings' positions, queries)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "pos_embed" not in name and "queries" not in name else no_decay).append(
                p
            )
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = dict(lr=config.lr, betas=config.betas)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict, torch_state: torch.Tensor, cuda_state: torch.Tensor | None = None) -> None:
    random.setstate(_tupled(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state)


def rank_rng_states(device: torch.device) -> dict:
    """This process's python, numpy and torch (CPU, and CUDA when used) generators."""
    return {
        "rng": rng_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def per_rank(saved) -> list:
    """Checkpoints before distributed training held one RNG state, not a list of them."""
    return saved if isinstance(saved, list) else [saved]


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tupled(x):
    return tuple(_tupled(v) for v in x) if isinstance(x, list) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


class Trainer:
    def __init__(
        self,
        task: Stage,
        config: TrainConfig,
        out: Path,
        *,
        resume: bool = False,
        progress: bool = True,
        dist: Distributed | None = None,
        files: dict[str, str] | None = None,
    ):
        self.task, self.config, self.out = task, config, Path(out)
        self.files = files or {}  # name -> text, written into `out` once the run is known to be ours
        self.dist = dist or Distributed(device=torch.device(config.device))
        self.device = self.dist.device
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.progress = progress and self.dist.is_main
        self.resume = resume
        self.step = 0
        self.global_batch = config.batch_size * config.grad_accum * self.dist.world_size
        self.data_position = 0  # index of the first sample of the next step's global batch
        self.bad_streak = 0
        self.skipped_steps = 0
        self.saved_step = -1
        self.stop_requested = False
        self.checkpoint_dir = self.out / "checkpoints"
        self.parallel = DataParallel(
            task, self.dist, config.strategy
        )  # before the optimizer: FSDP swaps params
        self.model = task.model
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self._writer = None

    # --- checkpoints -------------------------------------------------------------------------
    def finished_checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        done = [
            p
            for p in self.checkpoint_dir.glob("step-*")
            if p.is_dir() and (p / MANIFEST).is_file() and not p.name.endswith((".tmp", ".old"))
        ]
        return sorted(done, key=lambda p: int(p.name.split("-")[1]))

    def clean_partial_checkpoints(self) -> None:
        if self.checkpoint_dir.is_dir():
            for p in self.checkpoint_dir.iterdir():
                if p.is_dir() and not (p / MANIFEST).is_file():
                    shutil.rmtree(p, ignore_errors=True)

    def save_checkpoint(self) -> Path:
        """Every rank calls this at the same step (ranks write their shards under FSDP)."""
        target = self.checkpoint_dir / f"step-{self.step:06d}"
        rngs = self.dist.gather(rank_rng_states(self.device))
        with shared_staging(target, self.dist) as staging:
            state = {"scheduler": self.scheduler.state_dict(), "torch_rng": [r["torch"] for r in rngs]}
            if self.device.type == "cuda":
                state["cuda_rng"] = [r["cuda"] for r in rngs]
            if self.parallel.sharded:
                state["optimizer_param_groups"] = save_sharded(
                    staging / SHARDED_DIR, self.model, self.optimizer
                )
            if self.dist.is_main:
                if not self.parallel.sharded:
                    self._save_weights(staging)
                    state["optimizer"] = self.optimizer.state_dict()
                save_state(staging / "state.pt", state)
                (staging / "state.json").write_text(
                    json.dumps(
                        {
                            "step": self.step,
                            "data_position": self.data_position,
                            "world_size": self.dist.world_size,
                            "bad_streak": self.bad_streak,
                            "skipped_steps": self.skipped_steps,
                            "rng": [r["rng"] for r in rngs],
                            "train_config": asdict(self.config),
                        }
                    )
                )
                self._before_manifest(staging)
                (staging / MANIFEST).write_text(
                    json.dumps(
                        {
                            "step": self.step,
                            "stage": self.task.name,
                            "files": sorted(p.name for p in staging.iterdir()),
                        }
                    )
                )
        if self.dist.is_main:
            for old in self.finished_checkpoints()[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.saved_step = self.step
        return target

    def _save_weights(self, staging: Path) -> None:
        from safetensors.torch import save_file

        save_file(weights_to_save(self.model), str(staging / WEIGHTS_FILE))

    def _before_manifest(self, staging: Path) -> None:
        """Fault injection for the crash tests: VLGPT_FAULT_PAUSE_SAVE_STEP=N pauses the save of step N
        just before its manifest is written, so a test can kill -9 the process mid-save."""
        if os.environ.get("VLGPT_FAULT_PAUSE_SAVE_STEP") == str(self.step):
            (staging.parent / "PAUSED").write_text(str(self.step))
            time.sleep(120)

    def load_checkpoint(self, path: Path) -> None:
        """Every rank loads the same checkpoint (under FSDP, a collective)."""
        was_sharded = (path / SHARDED_DIR).is_dir()
        if was_sharded != self.parallel.sharded:
            how = (
                "--strategy fsdp under torchrun (any process count)"
                if was_sharded
                else "--strategy ddp or alone"
            )
            raise CheckpointError(
                f"{path} holds {'sharded' if was_sharded else 'whole'} weights; resume it with {how}"
            )
        if not was_sharded:
            load_weights(path, self.model)
        state = load_state(path / "state.pt")
        try:
            meta = json.loads((path / "state.json").read_text())
            if was_sharded:
                load_sharded(path / SHARDED_DIR, self.model, self.optimizer, state["optimizer_param_groups"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, json.JSONDecodeError, FileNotFoundError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{path}: training state does not fit this run ({error})") from None
        self._restore_rng(meta["rng"], state["torch_rng"], state.get("cuda_rng"))
        self.step = self.saved_step = meta["step"]
        # A sample counter, not a step count: it stays right when the process count changes.
        self.data_position = meta.get("data_position", self.step * self.global_batch)
        self.bad_streak = meta["bad_streak"]
        self.skipped_steps = meta["skipped_steps"]

    def _restore_rng(self, rngs, torch_rngs, cuda_rngs) -> None:
        rngs, torch_rngs = per_rank(rngs), per_rank(torch_rngs)
        rank = self.dist.rank
        if rank < len(rngs):
            set_rng_state(rngs[rank], torch_rngs[rank], per_rank(cuda_rngs)[rank] if cuda_rngs else None)
        else:  # more processes than the checkpoint had: a fresh stream for the newcomer
            seed_everything(self.config.seed + rank + self.step)

    def micro_batch_start(self, micro: int) -> int:
        """Index of the first sample of this rank's micro-batch `micro` in the current step."""
        return self.data_position + (self.dist.rank * self.config.grad_accum + micro) * self.config.batch_size

    # --- logging -----------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                self._writer = False
        if self._writer:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._writer.add_scalar(f"{self.task.name}/{key}", value, record["step"])

    # --- the loop ----------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = True

    def say(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    def prepare(self) -> None:
        existing = self.finished_checkpoints()
        logged = (self.out / "metrics.jsonl").exists()
        self.dist.barrier()  # every rank has looked before rank 0 changes anything
        if (existing or logged) and not self.resume:
            raise TrainingError(
                f"{self.out} already holds a {self.task.name} run; pass --resume to continue "
                "it or choose another --out"
            )
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for name, text in self.files.items():
                (self.out / name).write_text(text)
            self.clean_partial_checkpoints()
            if logged and not existing:
                (self.out / "metrics.jsonl").unlink()
        if self.resume and existing:
            self.load_checkpoint(existing[-1])
            self.say(f"[{self.task.name}] resumed from {existing[-1]} (step {self.step})")
        else:
            seed_everything(self.config.seed + self.dist.rank)

    def train_step(self) -> dict:
        """One optimizer step over grad_accum micro-batches; skipped when anything is non-finite.

        The returned loss and metrics are this rank's; `fit` averages them over ranks."""
        cfg = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        samples = tokens = 0
        finite = True
        for micro in range(cfg.grad_accum):
            batch = to_device(self.task.batch(self.micro_batch_start(micro), cfg.batch_size), self.device)
            autocast = (
                torch.autocast(self.device.type, dtype=self.autocast_dtype)
                if self.autocast_dtype is not None
                else nullcontext()
            )
            with self.parallel.gradient_sync(micro == cfg.grad_accum - 1):
                with autocast:
                    loss, metrics = self.parallel.loss(batch)
                if not torch.isfinite(loss):
                    finite = False
                    if (
                        not self.dist.active
                    ):  # alone: stop here; with peers: finish, so collectives still pair up
                        totals["loss"] = float("nan")
                        break
                (loss / cfg.grad_accum).backward()
            totals["loss"] = totals.get("loss", 0.0) + loss.item() / cfg.grad_accum
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v) / cfg.grad_accum
            samples += cfg.batch_size
            tokens += self.task.tokens(batch)
        self.parallel.finish_gradients()
        finite = self.dist.everyone(finite)  # one rank's NaN skips the step on every rank
        grad_norm = float("nan")
        if finite:
            grad_norm = self.parallel.clip_gradients(cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            self.bad_streak = 0
        else:
            # Non-finite guard: leave the weights untouched, count it, and stop a run that keeps diverging.
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_streak += 1
            self.skipped_steps += 1
            if self.bad_streak >= cfg.max_bad_steps:
                last = self.finished_checkpoints()
                raise TrainingError(
                    f"{self.bad_streak} non-finite steps in a row at step {self.step}; stopped. Last good "
                    f"checkpoint: {last[-1] if last else 'none'}. Lower --lr or check the data."
                )
        self.scheduler.step()
        self.step += 1
        self.data_position += self.global_batch
        return {
            **totals,
            "grad_norm": grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": int(not finite),
            "samples": samples,
            "tokens": tokens,
        }

    def sync(self, record: dict) -> tuple[dict, bool]:
        """Averages the step's metrics over ranks (the global batch's loss), sums samples and tokens,
        and agrees on stopping: a signal any rank saw stops every rank after this same step."""
        if not self.dist.active:
            return record, self.stop_requested
        same = ("grad_norm", "lr", "skipped")  # equal on every rank already
        averaged = [k for k in record if k not in same + ("samples", "tokens")]
        sums = self.dist.sum(
            [record[k] for k in averaged] + [record["samples"], record["tokens"], float(self.stop_requested)]
        )
        merged = {**record, **{k: v / self.dist.world_size for k, v in zip(averaged, sums)}}
        merged["samples"], merged["tokens"] = int(sums[-3]), int(sums[-2])
        return merged, sums[-1] > 0

    def evaluate(self) -> dict:
        """Rank 0 evaluates the whole model; every rank returns its metrics."""
        with self.parallel.whole_model():
            metrics = self.task.evaluate() if self.dist.is_main else {}
        return self.dist.broadcast(metrics)

    def export(self) -> dict:
        """Final evaluation and RUN/<stage>/model/ (config.json + model.safetensors), by rank 0."""
        with self.parallel.whole_model():
            metrics = {}
            if self.dist.is_main:
                metrics = self.task.evaluate()
                self.log({"step": self.step, **_scalars(metrics, "eval_")})
                with atomic_dir(self.out / "model") as staging:
                    self.task.export(staging)
                    (staging / "metrics.json").write_text(
                        json.dumps(
                            {"step": self.step, "skipped_steps": self.skipped_steps, **metrics},
                            indent=2,
                            default=float,
                        )
                    )
        return self.dist.broadcast(metrics)

    def _pause_for_fault_tests(self) -> None:
        """Fault injection for the preemption tests: VLGPT_FAULT_PAUSE_STEP=N makes rank 0 write its
        pid to RUN/<stage>/PAUSED after step N and wait (up to 120 s) for a signal."""
        if self.dist.is_main and os.environ.get("VLGPT_FAULT_PAUSE_STEP") == str(self.step):
            marker = self.out / "PAUSED"
            (self.out / "PAUSED.tmp").write_text(str(os.getpid()))
            os.replace(self.out / "PAUSED.tmp", marker)  # a reader never sees it without the pid
            deadline = time.monotonic() + 120
            while not self.stop_requested and time.monotonic() < deadline:
                time.sleep(0.05)
            marker.unlink()

    def fit(self) -> dict:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.prepare()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, self._on_signal)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=self.task.name,
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        window_start, window_samples, window_tokens = time.perf_counter(), 0, 0
        try:
            while self.step < cfg.steps:
                record = self.train_step()
                self._pause_for_fault_tests()
                record, stop = self.sync(record)
                window_samples += record.pop("samples")
                window_tokens += record.pop("tokens")
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    record.update(
                        step=self.step,
                        samples_per_s=window_samples / elapsed,
                        tokens_per_s=window_tokens / elapsed,
                    )
                    self.log(record)
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        samples_s=f"{record['samples_per_s']:.0f}",
                        tokens_s=f"{record['tokens_per_s']:.0f}",
                    )
                    window_start, window_samples, window_tokens = time.perf_counter(), 0, 0
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.log({"step": self.step, **_scalars(self.evaluate(), "eval_")})
                if stop:
                    self.save_checkpoint()
                    self.say(
                        f"\n[{self.task.name}] stopped by signal at step {self.step}; checkpoint saved. "
                        "Resume with --resume."
                    )
                    self.dist.barrier()  # rank 0 has committed the checkpoint before anyone exits
                    raise Preempted()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
            bar.close()
            if self.saved_step != self.step:
                self.save_checkpoint()
            return self.export()
        except RuntimeError as error:
            if self.dist.active and peer_failure(error):
                raise TrainingError(
                    f"rank {self.dist.rank}: lost contact with another process at step {self.step} "
                    f"({str(error).splitlines()[0][:200]}); that rank's own error says why"
                ) from None
            raise
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self._writer:
                self._writer.close()


def _scalars(metrics: dict, prefix: str) -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = value
        elif isinstance(value, dict) and "mean" in value:
            out[prefix + key] = value["mean"]
    return out
