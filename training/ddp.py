"""Multi-process training (``torchrun``): DistributedDataParallel set-up and small helpers.

The training CLI is the same with or without ``torchrun``: when ``WORLD_SIZE`` > 1
is in the environment, :func:`init_from_env` starts a process group (NCCL on GPUs,
gloo on CPU), each process trains on its slice of every epoch's permutation, DDP
averages gradients, and only rank 0 writes checkpoints, the bundle and the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not under torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str) -> DistInfo:
    """Start the process group when launched by torchrun; a no-op otherwise.

    Args:
        device: "cpu" or "cuda" (decides gloo vs NCCL).
    """
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, backend=backend)


def shutdown(info: DistInfo) -> None:
    """Tear the process group down (after a final barrier)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_scalar(value: float, info: DistInfo, device: torch.device) -> float:
    """Mean of a scalar over all processes (identity when single-process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def broadcast_module(net: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (e.g. batch-norm statistics,
    which each rank updates from its own batches)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(t.data, src=0)


def wrap(net: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(net)`` when distributed, else ``net`` itself."""
    if not info.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # Default buffer sync: rank 0 broadcasts batch-norm statistics before each forward.
    return DDP(net, device_ids=ids)
