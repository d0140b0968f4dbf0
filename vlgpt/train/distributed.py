"""Data parallelism under torchrun: the process group, DDP or FSDP2 around a task's model, and
sharded checkpoints.

`torchrun --nproc_per_node=N -m vlgpt train STAGE ...` starts N copies of one command and sets
RANK, LOCAL_RANK and WORLD_SIZE; `process_group` joins them (gloo on CPU, NCCL on CUDA). Without
torchrun everything here reduces to one process and no collectives, and training is unchanged.

* ddp: every process holds the whole model; backward all-reduces (averages) the gradients.
* fsdp: FSDP2 `fully_shard` on every block (each child of a ModuleList) and on the whole; a process
  keeps 1/N of the weights, gradients and AdamW moments and gathers a block's weights only while it
  runs. FSDP2 cannot shard a scalar (CLIP's temperature): scalars stay replicated and their
  gradients are all-reduced here. Checkpoints are sharded as well (torch.distributed.checkpoint: a
  file per process and a metadata file), and load at another process count.

Evaluation and export want the whole model in one place, as plain CPU tensors: where the trained
weights are not that (FSDP, or a GPU), rank 0 keeps an unsharded CPU replica of the trainable model
(weights only: no gradients, no optimizer state), filled from a gathered state dict when needed.
The exported `model.safetensors` therefore loads in one process with the ordinary loaders.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn

from ..core.checkpoint import CheckpointError, atomic_dir
from ..core.config import ConfigError, TrainConfig

STRATEGIES = ("ddp", "fsdp")
DEVICES = ("cpu", "cuda")
SHARDED_DIR = "sharded"  # the DCP checkpoint inside checkpoints/step-N/ under --strategy fsdp
TORCHRUN = "torchrun --nproc_per_node=N -m vlgpt train STAGE ..."


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def is_main_process() -> bool:
    """Rank 0, or a process torchrun did not start: the one that prints, logs and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the defaults describe a single process."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    active: bool = False  # a process group is up (torchrun)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def joined(cls, device: torch.device) -> Distributed:
        """The process group this process already belongs to."""
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), device, True)

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks (one all-reduce)."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()

    def everyone(self, flag: bool) -> bool:
        """True when `flag` holds on every rank."""
        return self.sum([0.0 if flag else 1.0])[0] == 0

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]


def check_choices(config: TrainConfig) -> None:
    if config.strategy not in STRATEGIES:
        raise ConfigError(f"unknown --strategy {config.strategy!r}; choose {' or '.join(STRATEGIES)}")
    if config.device not in DEVICES:
        raise ConfigError(f"unknown --device {config.device!r}; choose {' or '.join(DEVICES)}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but this torch sees no GPU; train with --device cpu")


@contextmanager
def process_group(config: TrainConfig, timeout: timedelta = timedelta(minutes=30)) -> Iterator[Distributed]:
    """Join the torchrun job (or stay a single process); a barrier, then leave, on success.

    On an error the group is left without a barrier: the other ranks may be gone or waiting in a
    collective that will never complete, and they fail on their own when this process exits.
    """
    check_choices(config)
    if torch_dist.is_available() and torch_dist.is_initialized():  # a caller (a test, a notebook) set it up
        yield Distributed.joined(_device(config.device, int(os.environ.get("LOCAL_RANK", "0"))))
        return
    if not launched_by_torchrun():
        if config.strategy == "fsdp":
            raise ConfigError(
                f"--strategy fsdp shards the model across processes; launch with torchrun: {TORCHRUN}"
            )
        yield Distributed(device=_device(config.device, 0))
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _device(config.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield Distributed.joined(device)
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()


def _device(kind: str, local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")


def peer_failure(error: BaseException) -> bool:
    """A collective failed because another rank went away (it failed, or was killed)."""
    return isinstance(error, torch_dist.DistError) or "Connection closed by peer" in str(error)


# --- the model across processes ----------------------------------------------------------------


class TaskLoss(nn.Module):
    """A task's loss as a module. DDP and FSDP act around a module's forward, and a task reaches
    its model however it likes (CLIP's forward, the pixel decoder's `loss` method, ...)."""

    def __init__(self, task):
        super().__init__()
        self.model = task.model
        self.task = task  # not a module: only the trainable model is registered

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.task.loss(batch)


def leaves_parameters_unused(task) -> bool:
    """Whether a batch may leave some trainable parameters without a gradient (VL-GPT's image
    head, when no sample of a batch has an image target): DDP then looks for them every step."""
    return bool(getattr(task, "may_leave_parameters_unused", False))


class DataParallel:
    """The task's trainable model replicated (ddp) or sharded (fsdp) over the job's processes."""

    def __init__(self, task, dist: Distributed, strategy: str):
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy {strategy!r}; choose {' or '.join(STRATEGIES)}")
        self.task, self.dist = task, dist
        self.sharded = dist.active and strategy == "fsdp"
        model = task.model
        # Evaluation and export need plain CPU weights: when training's are not, gather into a replica.
        self.gathers = self.sharded or dist.device.type != "cpu"
        self.replica = copy.deepcopy(model) if self.gathers and dist.is_main else None
        model.to(dist.device)
        # FSDP2 shards along dim 0 and refuses scalars; they stay whole on every rank (all-reduced here).
        self.replicated = [p for p in model.parameters() if p.ndim == 0] if self.sharded else []
        loss = TaskLoss(task)
        if not dist.active:
            self.loss = loss
        elif self.sharded:
            self.loss = shard(loss, model, set(self.replicated), dist)
        else:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers are constants here: synced once at the start, not before every forward.
            self.loss = DistributedDataParallel(
                loss,
                device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                forward_sync_buffers=False,
                find_unused_parameters=leaves_parameters_unused(task),
            )

    def gradient_sync(self, sync: bool):
        """DDP: skip the all-reduce on all but the last micro-batch. FSDP reduce-scatters every
        micro-batch, which keeps only sharded gradients in memory."""
        if not sync and self.dist.active and not self.sharded:
            return self.loss.no_sync()
        return nullcontext()

    def finish_gradients(self) -> None:
        """After the last backward of a step: average the gradients FSDP left alone (the scalars)."""
        for param in self.replicated:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            torch_dist.all_reduce(param.grad)
            param.grad.div_(self.dist.world_size)

    def clip_gradients(self, max_norm: float) -> float:
        """Clip the global gradient norm (over all shards); returns it, the same on every rank."""
        params = [p for p in self.task.model.parameters() if p.grad is not None]
        if not self.sharded:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        from torch.distributed.tensor import DTensor

        sharded = [p.grad for p in params if isinstance(p.grad, DTensor)]
        whole = [p.grad for p in params if not isinstance(p.grad, DTensor)]
        squares = 0.0
        if sharded:  # the shards' partial norms, combined across ranks
            squares += float(torch.nn.utils.get_total_norm(sharded).full_tensor()) ** 2
        if whole:
            squares += float(torch.nn.utils.get_total_norm(whole)) ** 2
        norm = math.sqrt(squares)
        scale = min(1.0, max_norm / (norm + 1e-6))  # as clip_grad_norm_ does
        for grads in (sharded, whole):
            if grads and scale < 1.0:
                torch._foreach_mul_(grads, scale)
        return norm

    @contextmanager
    def whole_model(self) -> Iterator[None]:
        """Within: on rank 0, `task.model` is the whole trained model as plain CPU tensors.

        Gathering is a collective under FSDP: every rank must enter, and only rank 0 may use it.
        """
        if not self.gathers:
            yield
            return
        state = self._full_state_dict()
        if not self.dist.is_main:
            yield
            return
        self.replica.load_state_dict(state)
        trained, self.task.model = self.task.model, self.replica
        try:
            yield
        finally:
            self.task.model = trained

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        if not self.sharded:
            return (
                {k: v.detach().cpu() for k, v in self.task.model.state_dict().items()}
                if self.dist.is_main
                else {}
            )
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(
            self.task.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )


def shard(root: TaskLoss, model: nn.Module, replicated: set[nn.Parameter], dist: Distributed) -> TaskLoss:
    """FSDP2: every block (each child of a ModuleList), bottom-up, then everything else as one group;
    `replicated` parameters are left whole."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard  # 2 s of imports that only FSDP needs

    # Explicit: FSDP's default mesh is the GPU whenever there is one, even for a gloo run on CPU.
    mesh = init_device_mesh(dist.device.type, (dist.world_size,))

    for tensor in [*model.parameters(), *model.buffers()]:  # start from rank 0's weights, as DDP does
        torch_dist.broadcast(tensor.data, src=0)
    for module in reversed(list(model.modules())):  # children come after their parents in modules()
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, mesh=mesh, ignored_params=replicated)
    fully_shard(root, mesh=mesh, ignored_params=replicated)
    if leaves_parameters_unused(root.task):  # such ranks still join the reduce-scatter, with zeros
        root.set_reduce_scatter_unused_params(True)
    return root


# --- checkpoints -------------------------------------------------------------------------------


@contextmanager
def shared_staging(target: Path, dist: Distributed) -> Iterator[Path]:
    """`atomic_dir` for a checkpoint that several ranks write into: rank 0 creates the staging
    folder and, when the block succeeds, commits it; the others write their files in between."""
    if dist.is_main:
        with atomic_dir(target) as staging:
            dist.barrier()
            yield staging
    else:
        dist.barrier()
        yield target.with_name(target.name + ".tmp")


def save_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict]:
    """Write this rank's shard of the weights and AdamW moments (a collective); returns the
    optimizer's param_groups (hyperparameters, the same on every rank) for rank 0 to store.

    Only tensors go through DCP, so loading unpickles nothing but the checked metadata."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state["state"]}, checkpoint_id=directory)
    return optim_state["param_groups"]


def load_sharded(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, param_groups: list[dict]
) -> None:
    """Read a sharded checkpoint into the (already sharded) model and optimizer; a collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    check_sharded_metadata(directory)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state["state"]}
    try:
        dcp.load(state, checkpoint_id=directory)
    except (dcp.api.CheckpointException, RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{directory}: sharded checkpoint does not fit this run ({str(error).splitlines()[0][:300]})"
        ) from None
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict={"state": state["optimizer"], "param_groups": param_groups},
    )


# DCP's `.metadata` is a pickle. These are the only globals a checkpoint we wrote refers to.
_METADATA_GLOBALS = {
    *(
        ("torch.distributed.checkpoint.metadata", name)
        for name in (
            "Metadata",
            "MetadataIndex",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "StorageMeta",
            "_MEM_FORMAT_ENCODING",
        )
    ),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _METADATA_GLOBALS or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")


def check_sharded_metadata(directory: Path) -> None:
    """Refuse a sharded checkpoint whose metadata refers to anything but DCP's own records, or that
    holds non-tensor entries (DCP would load those with pickle): then DCP's own load is safe."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    file = directory / ".metadata"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; {directory.parent} is not a finished sharded checkpoint")
    try:
        with open(file, "rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
        entries = metadata.state_dict_metadata
    except Exception as error:  # unpickling fails in many ways
        raise CheckpointError(
            f"{file} is damaged or not a vlgpt sharded checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''})"
        ) from None
    others = [key for key, entry in entries.items() if not isinstance(entry, TensorStorageMetadata)]
    if others:
        raise CheckpointError(
            f"{file} holds non-tensor entries ({', '.join(others[:3])}); vlgpt never writes those"
        )
