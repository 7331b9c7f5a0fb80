"""Max pooling for inference in one compiled loop: ``out[n, c, oy, ox] = max over the window`` of
``x[n, c, oy * s + ky, ox * s + kx]`` (``nn.MaxPool2d`` without padding, dilation or ``ceil_mode``).

The usual 2x2 window of stride 2 has a loop of its own, in either memory order: a channels-last input (what an
event-driven conv and the LIF after it produce) is pooled in place of its layout and the output stays channels-last,
so nothing is copied into NCHW. The maximum is exact, so the output equals ``nn.MaxPool2d``'s bit for bit (NaN
aside). Without numba the module calls ``torch.nn.functional.max_pool2d``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsesnn.deploy.event_layers import EventBackend, inference, resolve_backend


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

    @numba.njit(nogil=True, cache=False, boundscheck=False)
    def max_pool_2x2_nhwc(x: Any, out: Any) -> None:  # pragma: no cover - compiled
        n_samples, ho, wo, n_ch = out.shape
        for n in range(n_samples):
            for oy in range(ho):
                upper, lower = x[n, 2 * oy], x[n, 2 * oy + 1]
                for ox in range(wo):
                    a, b, c, d, row = upper[2 * ox], upper[2 * ox + 1], lower[2 * ox], lower[2 * ox + 1], out[n, oy, ox]
                    for ch in range(n_ch):
                        row[ch] = max(max(a[ch], b[ch]), max(c[ch], d[ch]))

    return max_pool, max_pool_2x2, max_pool_2x2_nhwc


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

    @inference
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend != "numba" or x.dim() != 4:
            return F.max_pool2d(x, self.kernel, self.stride)
        n, c, h, w = x.shape
        ho, wo = (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        generic, two_by_two, two_by_two_nhwc = _numba_max_pool()
        if (
            self.kernel == 2
            and self.stride == 2
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            out_nhwc = np.empty((n, ho, wo, c), np.float32)
            two_by_two_nhwc(x.permute(0, 2, 3, 1).numpy(), out_nhwc)
            return torch.from_numpy(out_nhwc).permute(0, 3, 1, 2)  # [N, C, Ho, Wo], channels-last in memory
        flat = x.contiguous().view(n * c, h, w)
        out = np.empty((n * c, ho, wo), np.float32)
        if self.kernel == 2 and self.stride == 2:  # the usual pool, ~9x faster than the generic loop
            two_by_two(flat.numpy(), out)
        else:
            generic(flat.numpy(), self.kernel, self.stride, out)
        return torch.from_numpy(out).view(n, c, ho, wo)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, backend={self.backend}"
