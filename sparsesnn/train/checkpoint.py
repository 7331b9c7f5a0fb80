"""Atomic checkpoint files, always read to the CPU, and the helpers that put each restored state where it lives.

Writing: to a temporary file in the same directory, flushed to disk, then renamed. A reader therefore sees either the
previous complete checkpoint or the new complete one, never a torn file, even if the process is killed mid-write.

Reading: :func:`load_checkpoint` maps every tensor to the CPU, whatever device wrote it. Each owner then moves its
own state to where that state lives: a module's ``load_state_dict`` copies into its parameters, an optimiser casts
its moments to its parameters' device, :func:`restore_like` puts a tensor on the device and dtype of the live tensor
it replaces, and :func:`generator_state` turns a saved generator state back into the CPU byte tensor that
``torch.Generator.set_state`` takes. A checkpoint written on CUDA therefore resumes on the CPU and the other way
round; reading it with ``map_location=<cuda device>`` instead would move a CPU generator's state to the GPU, where
``set_state`` refuses it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from sparsesnn.core.errors import CheckpointError
from sparsesnn.core.files import atomic_write_bytes

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` with ``torch.save`` and write it atomically."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` to the CPU; raise :class:`CheckpointError` if it is
    unusable.

    Loads with ``weights_only=True``: tensors and plain containers only, no arbitrary pickled code. Every tensor
    comes back on the CPU; the caller restores each state to its device (see the module docstring).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a sparsesnn checkpoint of format {CHECKPOINT_FORMAT}")
    return state
