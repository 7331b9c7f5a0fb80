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

import hashlib
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


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over ranks in place (no-op in a single process)."""
    if is_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few Python numbers over ranks (float64)."""
    if not is_active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def collective_device() -> torch.device:
    """Where the process group's tensors must live: this rank's GPU for NCCL (set by :func:`init_from_env`), the CPU
    for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def masks_digest(masks: list[torch.Tensor]) -> int:
    """A 63-bit digest of a list of bool masks (identical masks give identical digests on every rank)."""
    h = hashlib.blake2b(digest_size=8)
    for m in masks:
        h.update(m.detach().to("cpu", torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def check_identical(digest: int, what: str) -> None:
    """Raise if ``digest`` differs between ranks: the topologies have diverged."""
    if not is_active():
        return
    gathered: list[int | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, digest)
    if len(set(gathered)) != 1:
        raise RuntimeError(f"{what} diverged between ranks (digests {gathered}); stopping before replicas drift apart")


def barrier() -> None:
    if is_active():
        dist.barrier()
