"""Putting restored state where it lives: a checkpoint is read to the CPU, then each tensor goes to the device and
dtype of the live tensor it replaces (:func:`restore_like`), and a generator state back to the CPU byte tensor
``torch.Generator.set_state`` takes (:func:`generator_state`). Used by the learners and the trainer alike."""

from __future__ import annotations

import torch


def restore_like(saved: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """``saved`` as a new tensor on ``live``'s device with ``live``'s dtype: a checkpoint tensor put back where the
    state it restores lives (``live`` is the tensor it replaces)."""
    return saved.detach().to(device=live.device, dtype=live.dtype, copy=True)


def generator_state(saved: torch.Tensor) -> torch.Tensor:
    """A saved ``torch.Generator`` state as ``set_state`` takes it: a CPU byte tensor, wherever it was read to.

    >>> g = torch.Generator().manual_seed(1)
    >>> _ = g.set_state(generator_state(g.get_state().double()))  # any device or dtype the state came back with
    """
    return saved.detach().to(device="cpu", dtype=torch.uint8)
