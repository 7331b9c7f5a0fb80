"""Atomic checkpoint files with a checksum, always read to the CPU, and the helpers that put each restored state
where it lives.

Writing: to a temporary file in the same directory, flushed to disk, then renamed. A reader therefore sees either the
previous complete checkpoint or the new complete one, never a torn file, even if the process is killed mid-write. A
write that fails (a full disk) is a :class:`FileWriteError` naming the file and the free space; the previous file
stays as it was.

Integrity: format 2 stores ``checksum``, a SHA-256 over the whole state (every tensor's dtype, shape and bytes, every
other value's type and ``repr``, in order), and :func:`load_checkpoint` recomputes it: a file changed after it was
written (a bad disk, a broken copy) is a :class:`~sparsesnn.core.errors.CheckpointError` naming the file and where an
intact state may be, not a run that resumes from garbage. Format 1 files (written before the checksum) still load,
unchecked. Both formats are refused when a tensor of the model or the optimiser holds NaN or infinity. The cost: one
pass over the state's bytes on every save and load (SHA-256 runs at about 1-2 GB/s, well below ``torch.save``'s own).

Reading: :func:`load_checkpoint` maps every tensor to the CPU, whatever device wrote it. Each owner then moves its
own state to where that state lives: a module's ``load_state_dict`` copies into its parameters, an optimiser casts
its moments to its parameters' device, :func:`restore_like` puts a tensor on the device and dtype of the live tensor
it replaces, and :func:`generator_state` turns a saved generator state back into the CPU byte tensor that
``torch.Generator.set_state`` takes. A checkpoint written on CUDA therefore resumes on the CPU and the other way
round; reading it with ``map_location=<cuda device>`` instead would move a CPU generator's state to the GPU, where
``set_state`` refuses it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sparsesnn.core.errors import CheckpointError, SparseSNNError
from sparsesnn.core.files import atomic_write_bytes
from sparsesnn.train.rundir import CHECKPOINT_FILE, SELECTED_FILE

#: 2: with ``checksum``; 1: without (still read)
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)
#: the parts of a checkpoint whose tensors must be finite (a learner's state may hold infinities on purpose)
FINITE_PARTS = ("model", "optimizer")


class FileWriteError(SparseSNNError, OSError):
    """A file could not be written (a full disk, a quota, a read-only file system); the message names the file and
    the free space. Whatever the file held before is intact."""


def write_error(path: str | Path, exc: OSError, kept: str = "") -> FileWriteError:
    """The one-line :class:`FileWriteError` for ``exc`` raised while writing ``path``: the file, the reason, the free
    space of its file system, and ``kept`` (what is still intact, in words)."""
    target = Path(path)
    where = target.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:,.1f} MiB free on its file system"
    except OSError:
        free = "free space unknown"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return FileWriteError(f"cannot write {target}: {reason} ({free}){'; ' + kept if kept else ''}")


def _digest(obj: Any, h: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            _digest(k, h)
            _digest(v, h)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _digest(v, h)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_checksum(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``state`` without its ``checksum`` entry (see the module docstring)."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != "checksum"}, h)
    return h.hexdigest()


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def non_finite_tensors(state: dict[str, Any], parts: tuple[str, ...] = FINITE_PARTS) -> list[str]:
    """The dotted names of the floating-point tensors under ``state[part]`` that hold NaN or infinity."""
    return [
        name
        for part in parts
        for name, t in _tensors(state.get(part, {}), part)
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())
    ]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` with its checksum with ``torch.save`` and write it atomically; a failed write is a
    :class:`FileWriteError` (the previous file at ``path`` is intact)."""
    payload = {"format": CHECKPOINT_FORMAT, **{k: v for k, v in state.items() if k not in ("format", "checksum")}}
    payload["checksum"] = state_checksum(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        kept = f"the previous {Path(path).name} is intact" if Path(path).is_file() else ""
        raise write_error(path, exc, kept) from None


def _way_out(p: Path) -> str:
    """Where an intact state of the run may be, in words, for a damaged ``p``."""
    other = {CHECKPOINT_FILE: SELECTED_FILE, SELECTED_FILE: CHECKPOINT_FILE}.get(p.name)
    if other is not None and (p.parent / other).is_file():
        if other == SELECTED_FILE:
            return (
                f"{p.parent / other} holds an earlier state of this run (the epoch selected by validation): evaluate "
                f"or export it with --checkpoint selected, or copy it over {p} to continue training from that epoch; "
                f"otherwise restore {p.name} from a copy of the run, or train it again"
            )
        return f"{p.parent / other} holds the run's last state (use --checkpoint last), or restore {p.name} from a copy"
    return f"restore {p.name} from a copy of the run, or train the run again"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` to the CPU; raise :class:`CheckpointError` if it is
    unusable: unreadable, of an unknown format, changed since it was written (its checksum), or holding NaN or
    infinity in the model or the optimiser.

    Loads with ``weights_only=True``: tensors and plain containers only, no arbitrary pickled code. Every tensor
    comes back on the CPU; the caller restores each state to its device (see the module docstring).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a damaged file
        raise CheckpointError(
            f"cannot read checkpoint {p} ({type(exc).__name__}: {exc}); the file is damaged or not a checkpoint: "
            f"{_way_out(p)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{p} is not a sparsesnn checkpoint of format {' or '.join(map(str, READABLE_FORMATS))}")
    if state["format"] >= 2:
        stored = state.get("checksum")
        if not isinstance(stored, str) or stored != state_checksum(state):
            raise CheckpointError(
                f"{p} is damaged: its contents do not match the checksum written with it (a disk or copy error "
                f"changed it after it was written); {_way_out(p)}"
            )
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"{p} holds non-finite values (NaN or infinity) in {shown}: the run had diverged when it was written; "
            f"{_way_out(p)}"
        )
    return state
