"""On-disk cache of event frames, keyed by every parameter that changes them.

A cache entry is one file ``<directory>/<key[:2]>/<key>.frames`` where ``key`` is the SHA-256 of a canonical JSON
of everything the frames depend on: the dataset name, the source file's path relative to the dataset root, its size
and modification time (ns), the sample's own bounds (e.g. a DVS Gesture label window), the frame parameters
(:meth:`ToFrames.cache_params`), decoder options and :data:`~sparsesnn.data.events.DECODER_VERSION`. Change any of
them and the key changes, so a stale entry is never served; old entries are simply never read again (delete the
directory to reclaim the space). Replacing a source file by another of the same size *and* the same mtime (a copy
that preserves timestamps) is the one change the key does not see.

File layout: the 8-byte magic ``SSNNFRM1``, the 32-byte SHA-256 of the body, then the body: an ``.npy`` array
(uint16 when every count is an integer below 65536, else float32), loaded without pickle. Entries are written
atomically (temporary file, fsync, ``os.replace``; :func:`sparsesnn.train.checkpoint.atomic_write_bytes`), so readers,
including concurrent ``DataLoader`` workers, see a complete entry or none. An entry that cannot be read, fails its
checksum, or has an unexpected shape is counted in ``stats["rebuilt"]``, rebuilt from the source and rewritten;
it never raises and is never served.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sparsesnn.core.files import atomic_write_bytes

__all__ = ["CACHE_FORMAT", "FrameCache", "cache_key"]

CACHE_FORMAT = 1
_MAGIC = b"SSNNFRM1"
_DIGEST = 32


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts`` (sorted keys, no whitespace), with the cache format.

    >>> cache_key({"a": 1, "b": [2, 3]}) == cache_key({"b": [2, 3], "a": 1})
    True
    """
    text = json.dumps({"cache_format": CACHE_FORMAT, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encode(frames: np.ndarray) -> bytes:
    array = np.asarray(frames, dtype=np.float32)
    if array.size == 0 or (array.min() >= 0 and array.max() < 65536 and np.array_equal(array, np.floor(array))):
        array = array.astype(np.uint16)
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    body = buf.getvalue()
    return _MAGIC + hashlib.sha256(body).digest() + body


# ``np.save``'s version 1.0 header for the two dtypes the cache writes, e.g.
# ``{'descr': '<u2', 'fortran_order': False, 'shape': (10, 2, 34, 34), }`` padded with spaces to a newline
_NPY_PREFIX = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(rb"\{'descr': '(<u2|<f4)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n")


def _read_npy(body: memoryview) -> np.ndarray | None:
    """The array of an ``.npy`` body as a view of ``body`` when its header is the one ``np.save`` writes for a
    little-endian uint16 or float32 C-order array and the payload is complete; None for anything else (the caller
    then lets ``np.load`` decide). Parsing the header with a pattern instead of ``np.load``'s ``literal_eval``
    saves most of the time of a warm cache read."""
    prefix = len(_NPY_PREFIX)
    if len(body) < prefix + 2 or body[:prefix] != _NPY_PREFIX:
        return None
    start = prefix + 2 + int.from_bytes(body[prefix : prefix + 2], "little")
    match = _NPY_HEADER.fullmatch(bytes(body[prefix + 2 : start]))
    if match is None:
        return None
    try:
        shape = tuple(int(v) for v in match[2].split(b",") if v.strip())
    except ValueError:
        return None
    dtype = np.dtype(match[1].decode("ascii"))
    count = math.prod(shape)
    if len(body) - start < count * dtype.itemsize:
        return None
    return np.frombuffer(body, dtype=dtype, count=count, offset=start).reshape(shape)


def _decode(payload: bytes | bytearray) -> np.ndarray | None:
    """The float32 frames of a cache file's bytes, or None when they are damaged. From a ``bytearray`` the result is
    a writable array without a copy of the body (float32 entries) or with one conversion (uint16 entries)."""
    view = memoryview(payload)
    head = len(_MAGIC) + _DIGEST
    if len(view) < head or view[: len(_MAGIC)] != _MAGIC:
        return None
    body = view[head:]
    if hashlib.sha256(body).digest() != view[len(_MAGIC) : head]:
        return None
    array = _read_npy(body)
    if array is None:
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception:  # a damaged .npy can raise ValueError, EOFError, OSError, ...
            return None
    if not isinstance(array, np.ndarray) or array.dtype not in (np.uint16, np.float32):
        return None
    return array.astype(np.float32, copy=False)


def _read(path: Path) -> bytearray:
    """All bytes of ``path`` in a writable buffer (one copy, no intermediate ``bytes``)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buffer = bytearray(size)
        got = f.readinto(buffer)
        return buffer if got == size else buffer[:got]


class FrameCache:
    """A directory of frame arrays, each under the key of its parameters.

    >>> # cache = FrameCache("~/.cache/sparsesnn/nmnist"); frames = cache.get(key, build, shape=(8, 2, 34, 34))
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self.stats = {"hits": 0, "misses": 0, "rebuilt": 0, "writes": 0}

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.frames"

    def load(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The stored frames, or None when absent; a damaged entry (or one of another shape) counts as rebuilt and
        gives None so the caller rebuilds it."""
        path = self.path(key)
        try:
            payload = _read(path)
        except FileNotFoundError:
            return None
        except OSError:
            self.stats["rebuilt"] += 1
            return None
        frames = _decode(payload)
        if frames is None or (shape is not None and tuple(frames.shape) != tuple(shape)):
            self.stats["rebuilt"] += 1
            return None
        return frames

    def store(self, key: str, frames: np.ndarray) -> None:
        atomic_write_bytes(self.path(key), _encode(frames))
        self.stats["writes"] += 1

    def get(self, key: str, build: Callable[[], np.ndarray], shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The frames under ``key``: loaded when a valid entry exists, else ``build()`` and stored."""
        frames = self.load(key, shape)
        if frames is not None:
            self.stats["hits"] += 1
            return frames
        self.stats["misses"] += 1
        frames = build()
        self.store(key, frames)
        return frames
