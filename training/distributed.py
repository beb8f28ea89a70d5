"""Data-parallel training over N processes with fastai's own `distrib_ctx` (Hugging Face Accelerate underneath).

`torchrun --nproc_per_node N -m training train ...` (or `accelerate launch`) starts N copies of this program; each
reads RANK and WORLD_SIZE from its environment and builds the same learner, and `distrib_ctx` wraps the model in
DistributedDataParallel and every DataLoader in fastai's `DistributedDL`, which hands each process its share of
every batch. Only rank 0 writes files.

The CPU adaptation, the one place we reach into fastai 2.8.12 (so that `make test` can train over 2 CPU processes):
- Accelerate creates a CPU (gloo) process group only when asked with `cpu=True`: we ask when there is no GPU.
- `DistributedDL._broadcast` copies the epoch's shuffled indices to CUDA before broadcasting them from rank 0
  ("nccl only works with cuda tensors"). Gloo broadcasts CPU tensors, so while a gloo fit runs, `cpu_broadcast`
  puts in the same three lines without `.cuda()`, and restores fastai's method afterwards. DistributedDL never
  reaches the export (fastai puts the plain DataLoaders back after the fit), so the pickle does not change.
- BatchNorm statistics stay per process (`sync_bn=False`): fastai's default, SyncBatchNorm, would stay in the
  exported model, whose layers would then differ from a single-process export's.

Known and left as fastai does it: the per-epoch metrics of a data-parallel fit count the few validation images that
DistributedDL repeats so that every process gets an equal share (its AccumMetric gathers without removing them).
The manifest's figures come from a plain validation pass after the fit, and match a single process exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# What torchrun and accelerate set for their children; the reload check's fresh process must not inherit them.
LAUNCHER_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
    "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
)  # fmt: skip


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE") or 1)


def rank() -> int:
    return int(os.environ.get("RANK") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK") or 0)


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def setup() -> None:
    """Join the process group now, so that data preparation can already wait on rank 0."""
    if not is_distributed():
        return
    import torch
    from accelerate import PartialState  # type: ignore[import-untyped]

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())  # so fastai's default device is this process's GPU
    PartialState(cpu=not torch.cuda.is_available())


def teardown() -> None:
    """Leave the process group (without this, gloo aborts the interpreter at exit)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextmanager
def rank0_first() -> Iterator[None]:
    """fastai's `rank0_first` as a block: rank 0 runs it first (writing any shared files), then the others."""
    if is_distributed() and not is_main():
        barrier()
    yield
    if is_distributed() and is_main():
        barrier()


@contextmanager
def data_parallel(learn: Any) -> Iterator[None]:
    """fastai's `distrib_ctx` with the CPU adaptation above; nothing at all in a single process."""
    if not is_distributed():
        yield
        return
    import torch
    from fastai import distributed as _fastai_distributed  # noqa: F401  adds Learner.distrib_ctx

    with learn.distrib_ctx(sync_bn=False, cpu=not torch.cuda.is_available()), cpu_broadcast():
        yield


@contextmanager
def cpu_broadcast() -> Iterator[None]:
    import torch.distributed as dist
    from fastai.distributed import DistributedDL

    if dist.get_backend() != "gloo":
        yield
        return
    fastai_broadcast = DistributedDL._broadcast
    DistributedDL._broadcast = _broadcast_on_cpu
    try:
        yield
    finally:
        DistributedDL._broadcast = fastai_broadcast


def _broadcast_on_cpu(self: Any, t: list[int], rank: int) -> list[int]:
    """fastai's DistributedDL._broadcast without `.cuda()`: every rank gets rank 0's list of indices."""
    import torch

    tensor = torch.tensor(t, dtype=torch.long)
    torch.distributed.broadcast(tensor, rank)
    return [int(i) for i in tensor.tolist()]


def clean_environment() -> dict[str, str]:
    """This process's environment without the launcher's variables: for a fresh single process."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
