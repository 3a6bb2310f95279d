"""Multi-GPU (or multi-process CPU) training through torch's own DistributedDataParallel (no Kedro here).

Launched by ``torchrun --nproc_per_node=N ...``, every process runs the same training loop; torchrun sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. :func:`setup` then joins the process group (NCCL on CUDA, Gloo
on CPU) and pins each process to GPU ``LOCAL_RANK``; :func:`wrap` puts the trainable module under DDP (gradients
averaged across processes, buffers broadcast from rank 0); :func:`shard` gives each rank its slice of the
epoch's shuffled order, as ``torch.utils.data.DistributedSampler`` does (padded so that every rank takes the
same number of steps). In a single process every function is a no-op, so the loops read the same either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``size == 1``: not distributed)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, shows progress bars and writes outputs."""
        return self.rank == 0


def launched_world() -> World:
    """The world torchrun (or any launcher setting ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) started us in."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise ValueError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers: {error}") from error
    if not 0 <= rank < max(size, 1):
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return World(size=max(size, 1), rank=rank, local_rank=local_rank)


def is_main_process() -> bool:
    """True outside a distributed launch and on rank 0 of one."""
    return launched_world().is_main


def configure_process() -> World:
    """Under a launch: GPU ``LOCAL_RANK`` becomes this process's default CUDA device (so that work before
    training, such as feature extraction, does not pile up on GPU 0) and ranks > 0 drop this package's log
    records below WARNING. Nothing happens in a single process."""
    world = launched_world()
    if world.distributed and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    if world.distributed and not world.is_main:
        logging.getLogger("unified_anomaly").setLevel(logging.WARNING)
    return world


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Joins the process group once (NCCL on CUDA, Gloo on CPU) and returns the world and this rank's device.

    On CUDA, rank ``r`` trains on GPU ``LOCAL_RANK`` (see :func:`configure_process`). Single process:
    ``(World(), device)`` and nothing else happens.
    """
    world = configure_process()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # set by configure_process
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)  # env:// rendezvous: MASTER_ADDR/PORT set by torchrun
        if world.is_main:
            logger.info("DDP: %d processes, backend %s", world.size, backend)
    return world, device


class _MethodAsForward(nn.Module):
    """DDP synchronises gradients of what runs through ``forward``: this routes ``forward`` to a method."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.method)(*args, **kwargs)


def wrap(module: nn.Module, method: str, world: World, device: torch.device) -> Callable:
    """``module.<method>`` as a callable; under DDP when distributed (``module`` keeps its own parameters,
    so the caller's optimiser and state dict are unchanged). ``module`` must already be on ``device``."""
    if not world.distributed:
        return getattr(module, method)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_MethodAsForward(module, method), device_ids=device_ids)


def shard(order: torch.Tensor | np.ndarray, world: World) -> torch.Tensor | np.ndarray:
    """This rank's share of an epoch's order (the same order on every rank: same seed, same generator).

    Like ``DistributedSampler(drop_last=False)``: the order is padded with its own head to a multiple of the
    world size, then rank ``r`` takes positions ``r, r + size, ...``; every rank gets ``ceil(n / size)``.
    """
    if not world.distributed or len(order) == 0:
        return order
    total = -(-len(order) // world.size) * world.size
    if isinstance(order, np.ndarray):
        padded = np.resize(order, total)  # repeats from the start
    else:
        padded = order.repeat(-(-total // len(order)))[:total]
    return padded[world.rank :: world.size]


def mean_across_ranks(value: float, world: World, device: torch.device) -> float:
    """The mean of ``value`` over all ranks (e.g. an epoch's training loss); ``value`` itself when alone."""
    if not world.distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world.size


def broadcast_buffers(module: nn.Module, world: World) -> None:
    """Rank 0's buffers (batch-norm running statistics, updated by each rank's own last batch) everywhere."""
    if not world.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
