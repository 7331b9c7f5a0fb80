"""Max pooling for inference in one compiled loop: ``out[n, c, oy, ox] = max over the window`` of
``x[n, c, oy * s + ky, ox * s + kx]`` (``nn.MaxPool2d`` without padding, dilation or ``ceil_mode``).

At batch 1 ``nn.MaxPool2d(2)`` on a ``[4, 32, 28, 28]`` spike map took ~0.1-0.2 ms on the 2-vCPU VM, as long as an
event-driven conv; the loop specialised to 2x2 windows of stride 2 takes ~0.014 ms. The maximum is exact, so the
output equals ``nn.MaxPool2d``'s bit for bit (NaN aside). Without numba the module calls
``torch.nn.functional.max_pool2d``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsesnn.deploy.event_layers import EventBackend, resolve_backend


@functools.cache
def _numba_max_pool() -> Any:
    import numba

    @numba.njit(nogil=True, cache=False, boundscheck=False)
    def max_pool(x: Any, kernel: int, stride: int, out: Any) -> None:  # pragma: no cover - compiled
        n_maps, ho, wo = out.shape
        for m in range(n_maps):
            plane = x[m]
            for oy in range(ho):
                for ox in range(wo):
                    best = plane[oy * stride, ox * stride]
                    for ky in range(kernel):
                        for kx in range(kernel):
                            v = plane[oy * stride + ky, ox * stride + kx]
                            if v > best:
                                best = v
                    out[m, oy, ox] = best

    @numba.njit(nogil=True, cache=False, boundscheck=False)
    def max_pool_2x2(x: Any, out: Any) -> None:  # pragma: no cover - compiled
        n_maps, ho, wo = out.shape
        for m in range(n_maps):
            for oy in range(ho):
                upper, lower, row = x[m, 2 * oy], x[m, 2 * oy + 1], out[m, oy]
                for ox in range(wo):
                    row[ox] = max(max(upper[2 * ox], upper[2 * ox + 1]), max(lower[2 * ox], lower[2 * ox + 1]))

    return max_pool, max_pool_2x2


def is_plain_max_pool(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.MaxPool2d`` this loop reproduces: square kernel and stride, no padding,
    dilation, ``ceil_mode`` or returned indices."""
    if type(module) is not nn.MaxPool2d:
        return False
    k, s, p, d = (module.kernel_size, module.stride, module.padding, module.dilation)
    square = all(isinstance(v, int) or (len(v) == 2 and v[0] == v[1]) for v in (k, s))
    no_pad = p in (0, (0, 0)) and d in (1, (1, 1))
    return square and no_pad and not module.ceil_mode and not module.return_indices


def _int(v: Any) -> int:
    return int(v if isinstance(v, int) else v[0])


class InferenceMaxPool2d(nn.Module):
    """``nn.MaxPool2d`` (see :func:`is_plain_max_pool`) on float32 CPU input ``[N, C, H, W]``."""

    def __init__(self, pool: nn.MaxPool2d, backend: EventBackend = "auto") -> None:
        super().__init__()
        if not is_plain_max_pool(pool):
            raise ValueError(f"InferenceMaxPool2d takes a square, unpadded, undilated MaxPool2d, got {pool}")
        self.kernel = _int(pool.kernel_size)
        self.stride = _int(pool.stride if pool.stride is not None else pool.kernel_size)
        self.backend = resolve_backend(backend)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend != "numba" or x.dim() != 4:
            return F.max_pool2d(x, self.kernel, self.stride)
        n, c, h, w = x.shape
        ho, wo = (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1
        flat = x.to(torch.float32).contiguous().view(n * c, h, w)
        out = np.empty((n * c, ho, wo), np.float32)
        generic, two_by_two = _numba_max_pool()
        if self.kernel == 2 and self.stride == 2:  # the usual pool, ~9x faster than the generic loop
            two_by_two(flat.numpy(), out)
        else:
            generic(flat.numpy(), self.kernel, self.stride, out)
        return torch.from_numpy(out).view(n, c, ho, wo)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, backend={self.backend}"
