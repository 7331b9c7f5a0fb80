"""Run a compiled kernel over slices of the samples on torch's thread count, from threads this object owns.

numba's own parallel layers do not sit well beside torch in one process: its OpenMP layer slowed the event kernels
40-80x once torch had set its thread count (BENCHMARKS.md), and its workqueue layer must not be entered from two
threads at once. The event kernels release the GIL instead (``nogil``), and :class:`SampleThreads` splits the
samples ``[0, N)`` into ``k = min(torch.get_num_threads(), N // min_samples)`` contiguous slices of near-equal
size, runs the first on the calling thread and the others on a pool of ``k - 1`` threads that it owns (created on
first use, never shared between layers, dropped when the layer is copied or pickled). Each slice writes its own
rows of the output, so the result does not depend on ``k``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


class SampleThreads:
    """Splits ``[0, n)`` over torch's intra-op thread count; see the module docstring.

    Args:
        min_samples: at least this many samples per thread (a smaller batch runs on fewer threads, or on the caller).
    """

    def __init__(self, min_samples: int = 1) -> None:
        if min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {min_samples}")
        self.min_samples = min_samples
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0

    def threads_for(self, n: int) -> int:
        """How many threads :meth:`run` uses for ``n`` samples."""
        return max(1, min(torch.get_num_threads(), n // self.min_samples))

    def run(self, kernel: Callable[[int, int], None], n: int) -> None:
        """Call ``kernel(start, stop)`` on the slices of ``[0, n)`` (all of them done when this returns; an error in
        any slice is raised here)."""
        k = self.threads_for(n)
        if k == 1:
            kernel(0, n)
            return
        bounds = [round(i * n / k) for i in range(k + 1)]
        pool = self._executor(k - 1)
        futures = [pool.submit(kernel, bounds[i], bounds[i + 1]) for i in range(1, k)]
        try:
            kernel(bounds[0], bounds[1])
        finally:
            for future in futures:
                future.result()

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None or self._workers != workers:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparsesnn-event")
            self._workers = workers
        return self._pool

    def __getstate__(self) -> dict[str, Any]:  # a pool's threads and locks do not copy or pickle: start afresh
        return {"min_samples": self.min_samples}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["min_samples"])  # type: ignore[misc]

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)  # type: ignore[union-attr]
