"""Multi-process training on ``torch.distributed``: the process group, sharding, and keeping topologies identical.

``torchrun --nproc-per-node N -m sparsesnn train ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; :func:`init_from_env` joins them into a process group (gloo on CPU, NCCL on CUDA, one GPU per
local rank). Only rank 0 writes run files. A structure learner keeps its topology identical on every rank:

- dense gradients captured for growth are averaged over ranks before any criterion reads them
  (:func:`all_reduce_mean_`), and every other input of a decision (weights, the learner's seeded generator) is
  already identical because DDP keeps the replicas in sync;
- after every topology change the engine checks it: each rank's mask digest is gathered and compared, and a
  divergence stops the run with an error instead of training diverging replicas silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """The context torchrun's environment variables describe (a single process when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device: torch.device, timeout_s: float = 600.0) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up; returns the context and the device this rank trains on."""
    ctx = env_context()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return ctx, device
