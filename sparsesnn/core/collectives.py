"""The few ``torch.distributed`` collectives that code below the trainer needs (a structure learner averaging dense
gradients over ranks, the trainer summing its step flags), each a no-op in a single process. Setting up the process
group is :mod:`sparsesnn.train.distributed`'s job."""

from __future__ import annotations

import torch
import torch.distributed as dist


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
