"""Event-driven Linear and Conv2d for inference: the cost follows the input's nonzeros times the surviving fan-out.

A dense layer computes every multiply-accumulate, ``out = W x``, whatever is zero. An SNN's input to a hidden layer
is binary and mostly 0, and a pruned layer's weights are mostly 0, so what it really needs is, for each nonzero input
``x[i]`` (a spike), to add ``W[:, i] * x[i]`` over the synapses of ``i`` that survive: ``sum_i nnz(W[:, i]) * 1[x_i
!= 0]`` operations, the effective synaptic operations (SOPs) that :mod:`sparsesnn.metrics` counts. The weights are
laid out once, by input, at construction:

- :class:`EventLinear`: for input ``i`` the output indices and values of its surviving synapses (CSC of ``W``).
- :class:`EventConv2d`: for input channel ``c`` its taps ``(ky, kx)`` that have a surviving weight, and for each tap
  its output column ``W[:, c, ky, kx]`` (the compiled kernel adds the whole column, one contiguous vectorised add;
  the torch fallback only its surviving entries). A spike at ``(c, iy, ix)`` adds them to the output pixel
  ``(oy, ox)`` with ``oy * stride = iy + padding - ky * dilation`` (likewise ``ox``), where that is a whole pixel
  inside the map. The output is accumulated channels-last, so the adds of one tap are contiguous in memory. At
  stride 1 and dilation 1 the compiled kernel adds a whole kernel row at once instead: the taps ``kx = kw-1 .. 0``
  of one ``(c, ky)`` reach adjacent output pixels, contiguous channels-last, so a spike costs ``kh`` vectorised adds
  of ``kw x out_channels`` floats (1.7x faster than per tap on the MNIST convnet's hidden conv; input channels with
  no synapse left are skipped).

The kernels are compiled with numba when it is installed (the ``deploy`` extra) and are plain vectorised torch ops
otherwise (``backend``: "auto", "numba", "torch"); both give the dense layer's outputs up to the order of float
summation. Inference only (no autograd), float32 on the CPU; ``groups = 1``, zero padding.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

EventBackend = Literal["auto", "numba", "torch"]


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def resolve_backend(backend: EventBackend) -> Literal["numba", "torch"]:
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    if backend == "numba" and not numba_available():
        raise ImportError("the numba backend needs numba: pip install 'sparsesnn[deploy]'")
    if backend == "auto":
        return "numba" if numba_available() else "torch"
    return backend


@functools.cache
def _numba_kernels() -> tuple[Any, Any, Any, Any]:
    """The kernels, compiled on first use (once per process)."""
    import numba

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True, inline="always")
    def add_scaled(dst: Any, src: Any, v: float) -> None:  # pragma: no cover - compiled
        """``dst += src * v``; a spike (``v == 1``) is a plain contiguous, vectorised add."""
        if v == 1.0:
            for o in range(dst.shape[0]):
                dst[o] += src[o]
        else:
            for o in range(dst.shape[0]):
                dst[o] += src[o] * v

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def linear(x: Any, indptr: Any, rows: Any, vals: Any, out: Any) -> None:  # pragma: no cover - compiled
        n_samples, n_in = x.shape
        for n in range(n_samples):
            row = out[n]
            for i in range(n_in):
                v = x[n, i]
                if v == 0.0:
                    continue
                for e in range(indptr[i], indptr[i + 1]):
                    row[rows[e]] += vals[e] * v

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def conv(  # pragma: no cover - compiled
        x: Any,
        tap_start: Any,
        tap_ky: Any,
        tap_kx: Any,
        columns: Any,
        out: Any,
        stride: int,
        pad_y: int,
        pad_x: int,
        dil: int,
    ) -> None:
        n_samples, n_ch, h, w = x.shape
        ho, wo = out.shape[1], out.shape[2]
        for n in range(n_samples):
            for c in range(n_ch):
                t0, t1 = tap_start[c], tap_start[c + 1]
                if t0 == t1:
                    continue
                for iy in range(h):
                    for ix in range(w):
                        v = x[n, c, iy, ix]
                        if v == 0.0:
                            continue
                        for t in range(t0, t1):
                            oy = iy + pad_y - tap_ky[t] * dil
                            ox = ix + pad_x - tap_kx[t] * dil
                            if oy < 0 or ox < 0:
                                continue
                            if stride != 1:  # integer division only where needed: it costs as much as the adds
                                if oy % stride != 0 or ox % stride != 0:
                                    continue
                                oy //= stride
                                ox //= stride
                            if oy >= ho or ox >= wo:
                                continue
                            add_scaled(out[n, oy, ox], columns[t], v)  # the tap's whole column

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def linear_columns(x: Any, columns: Any, out: Any) -> None:  # pragma: no cover - compiled
        n_samples, n_in = x.shape
        for n in range(n_samples):
            row = out[n]
            for i in range(n_in):
                v = x[n, i]
                if v == 0.0:
                    continue
                add_scaled(row, columns[i], v)

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def conv_rows(x: Any, live: Any, rows: Any, out: Any, pad_y: int, pad_x: int) -> None:  # pragma: no cover
        n_samples, n_ch, h, w = x.shape
        ho, wo, n_out = out.shape[1], out.shape[2], out.shape[3]
        kh = rows.shape[1]
        kw = rows.shape[2] // n_out
        for n in range(n_samples):
            flat_out = out[n].reshape(ho, wo * n_out)  # a view: one output row's pixels x channels, contiguous
            for c in range(n_ch):
                if not live[c]:
                    continue
                for iy in range(h):
                    for ix in range(w):
                        v = x[n, c, iy, ix]
                        if v == 0.0:
                            continue
                        ox0 = ix + pad_x - (kw - 1)  # output column reached by the last tap, kx = kw - 1
                        lo = max(0, -ox0)
                        hi = min(kw, wo - ox0)
                        if lo >= hi:
                            continue
                        for ky in range(kh):
                            oy = iy + pad_y - ky
                            if oy < 0 or oy >= ho:
                                continue
                            row = flat_out[oy, (ox0 + lo) * n_out : (ox0 + hi) * n_out]
                            add_scaled(row, rows[c, ky, lo * n_out : hi * n_out], v)

    return linear, conv, linear_columns, conv_rows


def _segments(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For segments ``[starts[k], starts[k] + counts[k])``: the segment of every element and its index."""
    seg = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return seg, starts[seg] + offsets


#: weight density at or above which the compiled EventLinear adds each spike's whole weight column (contiguous,
#: vectorised) instead of its surviving entries (scattered): a scattered add costs several contiguous ones
COLUMN_LAYOUT_DENSITY = 0.25


class EventLinear(nn.Module):
    """``nn.Linear`` computed per nonzero input over the surviving synapses (see the module docstring). With the
    compiled backend and a weight density of at least :data:`COLUMN_LAYOUT_DENSITY`, each nonzero input adds its
    whole column of ``W`` instead (zeros included), as :class:`EventConv2d` does."""

    def __init__(self, linear: nn.Linear, backend: EventBackend = "auto") -> None:
        super().__init__()
        weight = linear.weight.detach().to(torch.float32).cpu()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.backend = resolve_backend(backend)
        density = float((weight != 0).float().mean()) if weight.numel() else 0.0
        self.columns = weight.t().contiguous() if self.backend == "numba" and density >= COLUMN_LAYOUT_DENSITY else None
        rows, cols = torch.nonzero(weight.t() != 0, as_tuple=True)  # by input (row of W^T), then output
        self.indptr = torch.zeros(self.in_features + 1, dtype=torch.int64)
        self.indptr[1:] = torch.bincount(rows, minlength=self.in_features).cumsum(0)
        self.rows, self.vals = cols.to(torch.int32).contiguous(), weight.t()[rows, cols].contiguous()
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).cpu().clone()
        self.synapses = int(self.vals.numel())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.float32).contiguous()
        if self.backend == "numba":
            out = np.zeros((flat.shape[0], self.out_features), np.float32)
            if self.columns is not None:
                _numba_kernels()[2](flat.numpy(), self.columns.numpy(), out)
            else:
                _numba_kernels()[0](flat.numpy(), self.indptr.numpy(), self.rows.numpy(), self.vals.numpy(), out)
            result = torch.from_numpy(out)
        else:
            n, i = torch.nonzero(flat, as_tuple=True)
            starts = self.indptr[i]
            seg, e = _segments(starts, self.indptr[i + 1] - starts)
            result = torch.zeros(flat.shape[0] * self.out_features)
            result.index_add_(0, n[seg] * self.out_features + self.rows[e], self.vals[e] * flat[n, i][seg])
            result = result.view(flat.shape[0], self.out_features)
        if self.bias is not None:
            result += self.bias
        return result.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        layout = "columns" if self.columns is not None else "csc"
        return (
            f"{self.in_features} -> {self.out_features}, {self.synapses} synapses, backend={self.backend}, "
            f"layout={layout}"
        )


class EventConv2d(nn.Module):
    """``nn.Conv2d`` (``groups = 1``, zero padding) computed per nonzero input over the surviving weights."""

    def __init__(self, conv: nn.Conv2d, backend: EventBackend = "auto") -> None:
        super().__init__()
        reason = self.unsupported(conv)
        if reason is not None:
            raise ValueError(reason)
        weight = conv.weight.detach().to(torch.float32).cpu()
        self.out_channels, self.in_channels, self.kh, self.kw = weight.shape
        self.stride, self.dilation = int(conv.stride[0]), int(conv.dilation[0])
        self.pad_y, self.pad_x = int(conv.padding[0]), int(conv.padding[1])
        self.backend = resolve_backend(backend)
        # entries sorted by input channel, then tap (ky, kx), then output channel
        c, ky, kx, o = torch.nonzero(weight.permute(1, 2, 3, 0) != 0, as_tuple=True)
        self.vals = weight[o, c, ky, kx].contiguous()
        self.out_ch = o.contiguous()
        tap = (c * self.kh + ky) * self.kw + kx  # nondecreasing
        new_tap = torch.ones_like(tap, dtype=torch.bool)
        new_tap[1:] = tap[1:] != tap[:-1]
        first = torch.nonzero(new_tap).flatten()
        self.entry_start = torch.cat([first, torch.tensor([len(tap)])]).contiguous()
        taps = tap[first]
        self.tap_ky = ((taps // self.kw) % self.kh).contiguous()
        self.tap_kx = (taps % self.kw).contiguous()
        tap_channel = taps // (self.kh * self.kw)
        self.tap_start = torch.zeros(self.in_channels + 1, dtype=torch.int64)
        self.tap_start[1:] = torch.bincount(tap_channel, minlength=self.in_channels).cumsum(0)
        # the compiled kernel adds each tap's whole output column (zeros included): one contiguous vectorised add per
        # spike and tap beats a few scattered adds (bench/deploy_speed.py). At stride 1 and dilation 1 the taps of
        # one kernel row reach adjacent output pixels, contiguous channels-last, so it adds a whole kernel row at once:
        # rows[c, ky] = W[:, c, ky, kw-1], ..., W[:, c, ky, 0] (output column ascending), zeros included
        self.row_layout = self.backend == "numba" and self.stride == 1 and self.dilation == 1
        if self.row_layout:
            self.rows = weight.permute(1, 2, 3, 0).flip(2).reshape(self.in_channels, self.kh, -1).contiguous()
            self.live = (self.tap_start[1:] > self.tap_start[:-1]).to(torch.uint8)  # input channels with a synapse
        else:
            self.columns = weight[:, tap_channel, self.tap_ky, self.tap_kx].t().contiguous()  # [taps, out_channels]
        self.bias = None if conv.bias is None else conv.bias.detach().to(torch.float32).cpu().clone()
        self.synapses = int(self.vals.numel())

    @staticmethod
    def unsupported(conv: nn.Conv2d) -> str | None:
        """Why ``conv`` cannot run event-driven, or None when it can."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return "EventConv2d takes a Conv2d with groups = 1 and numeric zero padding"
        if conv.stride[0] != conv.stride[1] or conv.dilation[0] != conv.dilation[1]:
            return "EventConv2d takes equal strides and dilations in both directions"
        return None

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        d, s = self.dilation, self.stride
        return (h + 2 * self.pad_y - d * (self.kh - 1) - 1) // s + 1, (
            w + 2 * self.pad_x - d * (self.kw - 1) - 1
        ) // s + 1

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()  # the kernels read NCHW or channels-last input as it is (a strided view)
        n_samples, _c, h, w = x.shape
        ho, wo = self.output_size(h, w)
        if self.backend == "numba":
            out = np.zeros((n_samples, ho, wo, self.out_channels), np.float32)
            if self.row_layout:
                _numba_kernels()[3](x.numpy(), self.live.numpy(), self.rows.numpy(), out, self.pad_y, self.pad_x)
            else:
                _numba_kernels()[1](
                    x.numpy(), self.tap_start.numpy(), self.tap_ky.numpy(), self.tap_kx.numpy(), self.columns.numpy(),
                    out, self.stride, self.pad_y, self.pad_x, self.dilation,
                )  # fmt: skip
            result = torch.from_numpy(out)
        else:
            result = self._torch_forward(x, ho, wo)
        if self.bias is not None:
            result += self.bias
        return result.permute(0, 3, 1, 2)  # [N, O, Ho, Wo], channels-last in memory

    def _torch_forward(self, x: torch.Tensor, ho: int, wo: int) -> torch.Tensor:
        n, c, iy, ix = torch.nonzero(x, as_tuple=True)
        value = x[n, c, iy, ix]
        starts = self.tap_start[c]
        spike, t = _segments(starts, self.tap_start[c + 1] - starts)  # every (spike, tap) pair
        ny = iy[spike] + self.pad_y - self.tap_ky[t] * self.dilation
        nx = ix[spike] + self.pad_x - self.tap_kx[t] * self.dilation
        ok = (ny >= 0) & (nx >= 0) & (ny % self.stride == 0) & (nx % self.stride == 0)
        oy, ox = ny // self.stride, nx // self.stride
        ok &= (oy < ho) & (ox < wo)
        spike, t, oy, ox = spike[ok], t[ok], oy[ok], ox[ok]
        entry_starts = self.entry_start[t]
        pair, e = _segments(entry_starts, self.entry_start[t + 1] - entry_starts)
        pixel = (n[spike][pair] * ho + oy[pair]) * wo + ox[pair]
        result = torch.zeros(x.shape[0] * ho * wo * self.out_channels)
        result.index_add_(0, pixel * self.out_channels + self.out_ch[e], self.vals[e] * value[spike][pair])
        return result.view(x.shape[0], ho, wo, self.out_channels)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels} -> {self.out_channels}, kernel {self.kh}x{self.kw}, stride {self.stride}, "
            f"padding ({self.pad_y}, {self.pad_x}), dilation {self.dilation}, {self.synapses} synapses, "
            f"backend={self.backend}"
        )
