"""Process-level tuning for CPU training: the glibc allocator.

With glibc's default settings every large tensor (above ``M_MMAP_THRESHOLD``, 128 KiB to 32 MiB) is a fresh
``mmap``: each training step page-faults its activations in again and returns them to the system on free.
:func:`tune_allocator` keeps freed memory in the heap instead (``M_MMAP_MAX = 0``, a large ``M_TRIM_THRESHOLD``), the
same effect as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` in the environment or an ``LD_PRELOAD`` of tcmalloc.
The price: the resident size stays at the peak of the run.

It changes the whole process, so the library never calls it on import: the ``sparsesnn`` command line and the
benchmarks do (``SPARSESNN_TUNE_MALLOC=0`` turns it off); a user's own script may call it once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_allocator(trim_threshold: int = 1 << 30) -> bool:
    """Keep large allocations in the glibc heap; returns True when applied (Linux with glibc only)."""
    if os.environ.get("SPARSESNN_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1)) == 1 and ok
