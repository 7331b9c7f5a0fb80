"""Event-driven Linear and Conv2d for inference: the cost follows the input's nonzeros times the surviving fan-out.

A dense layer computes every multiply-accumulate, ``out = W x``, whatever is zero. An SNN's input to a hidden layer
is binary and mostly 0, and a pruned layer's weights are mostly 0, so what it really needs is, for each nonzero input
``x[i]`` (a spike), to add ``W[:, i] * x[i]`` over the synapses of ``i`` that survive: ``sum_i nnz(W[:, i]) * 1[x_i
!= 0]`` operations, the effective synaptic operations (SOPs) that :mod:`sparsesnn.metrics` counts. The weights are
laid out once, by input, at construction:

- :class:`EventLinear`: for input ``i`` its surviving synapses, as a ``layout``: ``"csc"`` (output indices and
  values, one scalar add each), ``"blocks"`` (the blocks of 8 consecutive outputs that hold a surviving weight, one
  vector add each) or ``"columns"`` (the whole column ``W[:, i]``, zeros included, one contiguous vectorised add).
- :class:`EventConv2d`: a spike at ``(c, iy, ix)`` adds tap ``(ky, kx)``'s output column ``W[:, c, ky, kx]`` to the
  output pixel ``(oy, ox)`` with ``oy * stride = iy + padding - ky * dilation`` (likewise ``ox``), where that is a
  whole pixel inside the map; the output is accumulated channels-last, so the adds of one tap are contiguous.
  ``"columns"``: each tap with a surviving weight adds its whole column. At stride 1 and dilation 1 the taps
  ``kx = kw-1 .. 0`` of one ``(c, ky)`` reach adjacent output pixels, contiguous channels-last: ``"rows"`` adds the
  whole kernel row (``kw x out_channels`` floats, zeros included) at once, ``"blocks"`` only its blocks of 8
  output channels that hold a surviving weight (input channels with no synapse left are skipped by both).
- ``"direct"`` (:class:`EventConv2d`, any stride and dilation) skips nothing: every output pixel gathers its whole
  receptive field, zeros included, summed in registers. It is the layout for analog input (a network's first layer,
  fed the image), where every input is nonzero and adding inputs one at a time only costs more memory traffic.

**Which layout.** The whole-row and whole-column adds stream through memory at the vector unit's pace (about
:data:`VECTOR_ADD_NS` per 8 floats here); a block costs a vector add plus a jump to a new place in the output
(:data:`BLOCK_ADD_NS`), a single weight a scalar add and a jump (:data:`SCALAR_ADD_NS`); weights too large for the cache
stream from memory (:data:`STREAMED_VECTOR_NS`, :data:`STREAMED_BLOCK_NS`). The layer takes the layout whose cost per
spike, summed over its inputs with these constants, is lowest (:func:`layout_costs`); :func:`~sparsesnn.deploy.deploy`
times every layout on the example and keeps the fastest instead. A scattered 10 % mask leaves most blocks of 8 non-empty
(57 %), so it keeps the whole rows; a block-structured mask (``sparse.granularity = "block"``) makes the blocks pay.

**Threads.** With more than one torch intra-op thread the compiled kernels run on slices of the samples at once
(:class:`~sparsesnn.deploy.threads.SampleThreads`), each writing its own rows of the output, when every thread gets
at least :data:`MIN_SAMPLES_PER_THREAD` samples (a batch of 64 at ``T = 4``, not a batch of 1).

The kernels are compiled with numba when it is installed (the ``deploy`` extra) and are plain vectorised torch ops
otherwise (``backend``: "auto", "numba", "torch"); both give the dense layer's outputs up to the order of float
summation. Inference only (no autograd), float32 on the CPU; ``groups = 1``, zero padding.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from sparsesnn.deploy.event_kernels import BLOCK, event_kernels
from sparsesnn.deploy.threads import SampleThreads

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


def inference(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` without autograd, entering ``torch.no_grad`` only when grad mode is on: a deployed model runs many
    small layers per sample, and a context manager per layer call costs more than some of them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _segments(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For segments ``[starts[k], starts[k] + counts[k])``: the segment of every element and its index."""
    seg = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return seg, starts[seg] + offsets


#: the cost model's constants, ns per 8 floats added contiguously from cache-resident weights, the same streamed from
#: memory (weights larger than :data:`CACHED_BYTES`), per block of 8 (cached, streamed) and per scattered weight
#: (measured on this repository's 2-core CPU, bench/deploy_speed.py; only their ratios matter)
VECTOR_ADD_NS = 0.6
STREAMED_VECTOR_NS = 1.7
BLOCK_ADD_NS = 2.0
STREAMED_BLOCK_NS = 2.7
SCALAR_ADD_NS = 1.7
#: weights up to this size count as cache-resident for the whole-row / whole-column layouts
CACHED_BYTES = 1 << 20

#: a batch is split over threads only where each thread gets at least this many samples (time steps x batch): handing
#: a slice to a pool thread and waiting for it costs tens of microseconds, as much as a whole batch-1 call
MIN_SAMPLES_PER_THREAD = 8

LinearLayout = Literal["auto", "csc", "blocks", "columns"]
ConvLayout = Literal["auto", "rows", "blocks", "columns", "direct"]


def blocks_of(weight_by_input: torch.Tensor) -> torch.Tensor:
    """``[..., O]`` weights -> ``[..., ceil(O / 8)]``: whether each block of :data:`BLOCK` consecutive outputs holds a
    surviving weight (the last block padded with zeros)."""
    pad = (-weight_by_input.shape[-1]) % BLOCK
    padded = nn.functional.pad(weight_by_input, (0, pad))
    return (padded.reshape(*padded.shape[:-1], -1, BLOCK) != 0).any(-1)


def layout_costs(nonzeros: int, blocks: int, dense_vectors: int) -> dict[str, float]:
    """The cost model's estimate (ns, one spike on every input once) of each layout: ``nonzeros`` surviving weights
    in ``blocks`` non-empty blocks of 8, against ``dense_vectors`` groups of 8 floats added whole (streamed from
    memory when they exceed :data:`CACHED_BYTES`). :func:`sparsesnn.deploy.deploy` times the layouts instead."""
    vector_ns = VECTOR_ADD_NS if dense_vectors * BLOCK * 4 <= CACHED_BYTES else STREAMED_VECTOR_NS
    block_ns = BLOCK_ADD_NS if blocks * (BLOCK * 4 + 8) <= CACHED_BYTES else STREAMED_BLOCK_NS  # values + offset
    return {
        "csc": nonzeros * SCALAR_ADD_NS,
        "blocks": blocks * block_ns,
        "dense": dense_vectors * vector_ns,
    }


def _check_layout(layout: str, allowed: tuple[str, ...], backend: str) -> None:
    if layout not in ("auto", *allowed):
        raise ValueError(f"layout must be one of {('auto', *allowed)}, got {layout!r}")
    if layout != "auto" and backend != "numba":
        raise ValueError(f"layout {layout!r} is a layout of the compiled kernels: it needs backend 'numba'")


class EventLinear(nn.Module):
    """``nn.Linear`` computed per nonzero input over the surviving synapses (see the module docstring).

    ``layout``: "auto" (the cost model's choice with the compiled backend), or one of :attr:`LAYOUTS`."""

    #: the compiled kernels' weight layouts
    LAYOUTS: tuple[str, ...] = ("csc", "blocks", "columns")

    def __init__(self, linear: nn.Linear, backend: EventBackend = "auto", layout: LinearLayout = "auto") -> None:
        super().__init__()
        weight = linear.weight.detach().to(torch.float32).cpu()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.backend = resolve_backend(backend)
        _check_layout(layout, self.LAYOUTS, self.backend)
        by_input = weight.t().contiguous()  # [in, out]
        nonempty = blocks_of(by_input)
        self.padded_out = nonempty.shape[1] * BLOCK
        if layout == "auto":
            costs = layout_costs(int((by_input != 0).sum()), int(nonempty.sum()), self.in_features * nonempty.shape[1])
            best = min(costs, key=costs.__getitem__) if self.backend == "numba" else "csc"
            layout = "columns" if best == "dense" else best  # type: ignore[assignment]
        self.layout = layout
        rows, cols = torch.nonzero(by_input != 0, as_tuple=True)  # by input (row of W^T), then output
        self.indptr = torch.zeros(self.in_features + 1, dtype=torch.int64)
        self.indptr[1:] = torch.bincount(rows, minlength=self.in_features).cumsum(0)
        self.rows, self.vals = cols.to(torch.int32).contiguous(), by_input[rows, cols].contiguous()
        self.columns = by_input if layout == "columns" else None
        if layout == "blocks":
            i, blk = torch.nonzero(nonempty, as_tuple=True)
            padded = nn.functional.pad(by_input, (0, self.padded_out - self.out_features))
            self.block_vals = padded.reshape(self.in_features, -1, BLOCK)[i, blk].reshape(-1).contiguous()
            self.block_offsets = (blk * BLOCK).to(torch.int64).contiguous()
            self.block_ptr = torch.zeros(self.in_features + 1, dtype=torch.int64)
            self.block_ptr[1:] = torch.bincount(i, minlength=self.in_features).cumsum(0)
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).cpu().clone()
        self.synapses = int(self.vals.numel())
        self.threads = SampleThreads(MIN_SAMPLES_PER_THREAD)
        # the compiled kernels' first value of every output row: the bias, zero-padded to the layout's width
        self._start = np.zeros(self.padded_out if layout == "blocks" else self.out_features, np.float32)
        if self.bias is not None:
            self._start[: self.out_features] = self.bias.numpy()
        self._call: Callable[[np.ndarray, np.ndarray], None] | None = None
        self._block_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # see block_arrays()

    @inference
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if self.backend == "numba":
            out = self.charge(flat)
            result = torch.from_numpy(out)
            if out.shape[1] != self.out_features:
                result = result[:, : self.out_features]
            return result.reshape(*lead, self.out_features)
        if flat.dtype != torch.float32:
            flat = flat.to(torch.float32)
        n, i = torch.nonzero(flat, as_tuple=True)
        starts = self.indptr[i]
        seg, e = _segments(starts, self.indptr[i + 1] - starts)
        result = torch.zeros(flat.shape[0] * self.out_features)
        result.index_add_(0, n[seg] * self.out_features + self.rows[e], self.vals[e] * flat[n, i][seg])
        result = result.view(flat.shape[0], self.out_features)
        if self.bias is not None:
            result += self.bias
        return result.reshape(*lead, self.out_features)

    def charge(self, flat: torch.Tensor, steps: int = 1) -> np.ndarray:
        """The compiled kernel's output with the bias, ``[n, width]`` float32 (``width``: the outputs, zero-padded to
        whole blocks in the "blocks" layout), for samples ``flat`` ``[n, in]`` (made float32 and contiguous).
        ``steps > 1`` says the rows are ``steps`` time steps of ``n / steps`` samples, time-major; the "blocks"
        layout then adds each sample's steps together (``linear_blocks_steps`` of
        :mod:`~sparsesnn.deploy.event_kernels`: a block loaded once for all the steps whose input spiked; the same
        outputs for finite weights). The other layouts ignore it: a whole column's adds outweigh its loads, and
        grouping four steps made the dense MNIST FC 1.8x slower."""
        if flat.dtype != torch.float32:
            flat = flat.to(torch.float32)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        n = flat.shape[0]
        out = np.empty((n, self._start.shape[0]), np.float32)  # the kernels start every row at the bias
        a = (flat.detach() if flat.requires_grad else flat).numpy()
        if steps > 1 and self.layout == "blocks" and n % steps == 0:
            batch = n // steps
            x3, out3 = a.reshape(steps, batch, -1), out.reshape(steps, batch, -1)
            kernel = event_kernels().linear_blocks_steps
            ptr, offsets, vals = self.block_arrays()
            start = self._start
            if self.threads.threads_for(n) == 1:
                kernel(x3, ptr, offsets, vals, start, out3, 0, batch)
            else:
                self.threads.run(lambda s, e: kernel(x3, ptr, offsets, vals, start, out3, s, e), batch)
            return out
        call = self._call
        if call is None:
            call = self._call = self._kernel()
        if self.threads.threads_for(n) == 1:
            call(a, out)
        else:
            self.threads.run(lambda s, e: call(a[s:e], out[s:e]), n)
        return out

    def _kernel(self) -> Callable[[np.ndarray, np.ndarray], None]:
        """``call(x, out)``: the layout's compiled loop with the layout's arrays bound, on samples ``x`` ``[n, in]``
        into ``out`` ``[n, width]`` (built once, on the first call)."""
        k = event_kernels()
        start = self._start
        if self.layout == "columns":
            columns = self.columns.numpy()  # type: ignore[union-attr]
            return lambda x, out: k.linear_columns(x, columns, start, out)
        if self.layout == "blocks":
            ptr, offsets, vals = self.block_arrays()
            return lambda x, out: k.linear_blocks(x, ptr, offsets, vals, start, out)
        indptr, rows, vals = self.indptr.numpy(), self.rows.numpy(), self.vals.numpy()
        return lambda x, out: k.linear_csc(x, indptr, rows, vals, start, out)

    def block_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The "blocks" layout's ``(block_ptr, block_offsets, block_vals)`` as numpy views, taken on first use."""
        arrays = self._block_arrays
        if arrays is None:
            arrays = self._block_arrays = (
                self.block_ptr.numpy(),
                self.block_offsets.numpy(),
                self.block_vals.numpy(),
            )
        return arrays

    def __getstate__(self) -> dict[str, Any]:  # the bound call and views: taken again after a copy or unpickling
        return {**self.__dict__, "_call": None, "_block_arrays": None}

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, {self.synapses} synapses, backend={self.backend}, "
            f"layout={self.layout}"
        )


class EventConv2d(nn.Module):
    """``nn.Conv2d`` (``groups = 1``, zero padding) computed per nonzero input over the surviving weights.

    ``layout``: "auto" (the cost model's choice with the compiled backend; "rows" or "blocks" need stride 1 and
    dilation 1, else "columns"), or one of :meth:`layouts_for` the conv."""

    #: the compiled kernels' weight layouts; the first two need stride 1 and dilation 1
    LAYOUTS: tuple[str, ...] = ("rows", "blocks", "columns", "direct")

    @classmethod
    def layouts_for(cls, conv: nn.Conv2d) -> tuple[str, ...]:
        """The layouts ``conv``'s event form can take: all of :attr:`LAYOUTS` at stride 1 and dilation 1, else
        "columns" and "direct"."""
        return cls.LAYOUTS if conv.stride[0] == 1 and conv.dilation[0] == 1 else ("columns", "direct")

    def __init__(self, conv: nn.Conv2d, backend: EventBackend = "auto", layout: ConvLayout = "auto") -> None:
        super().__init__()
        reason = self.unsupported(conv)
        if reason is not None:
            raise ValueError(reason)
        weight = conv.weight.detach().to(torch.float32).cpu()
        self.out_channels, self.in_channels, self.kh, self.kw = weight.shape
        self.stride, self.dilation = int(conv.stride[0]), int(conv.dilation[0])
        self.pad_y, self.pad_x = int(conv.padding[0]), int(conv.padding[1])
        self.backend = resolve_backend(backend)
        _check_layout(layout, self.LAYOUTS, self.backend)
        allowed = self.layouts_for(conv)
        if layout not in ("auto", *allowed):
            raise ValueError(f"layout {layout!r} needs stride 1 and dilation 1 (got {self.stride}, {self.dilation})")
        # entries sorted by input channel, then tap (ky, kx), then output channel
        by_tap = weight.permute(1, 2, 3, 0)  # [C, kh, kw, O]
        c, ky, kx, o = torch.nonzero(by_tap != 0, as_tuple=True)
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
        self.live = (self.tap_start[1:] > self.tap_start[:-1]).to(torch.uint8)  # input channels with a synapse
        # kernel rows, output column ascending: row[c, ky] = W[:, c, ky, kw-1], ..., W[:, c, ky, 0] (slot p = kw-1-kx)
        rows = by_tap.flip(2).contiguous()  # [C, kh, kw, O]
        nonempty = blocks_of(rows)  # [C, kh, kw, ceil(O / 8)]
        self.padded_out = nonempty.shape[-1] * BLOCK
        if layout == "auto":
            if self.backend != "numba" or "rows" not in allowed:
                layout = "columns"
            else:
                live_rows = int(self.live.sum()) * self.kh
                costs = layout_costs(0, int(nonempty.sum()), live_rows * -(-self.kw * self.out_channels // BLOCK))
                layout = "blocks" if costs["blocks"] < costs["dense"] else "rows"
        self.layout = layout
        if layout == "rows":
            self.rows = rows.reshape(self.in_channels, self.kh, -1)
        elif layout == "blocks":
            cc, kyy, p, blk = torch.nonzero(nonempty, as_tuple=True)  # row-major: by (c, ky), then slot, then block
            padded = nn.functional.pad(rows, (0, self.padded_out - self.out_channels))
            self.block_vals = padded.reshape(*rows.shape[:3], -1, BLOCK)[cc, kyy, p, blk].reshape(-1).contiguous()
            self.block_offsets = (p * self.padded_out + blk * BLOCK).to(torch.int64).contiguous()
            self.block_ky = kyy.to(torch.int64).contiguous()
            counts = nonempty.sum(-1).reshape(-1)  # blocks per (c, ky, slot), in block order
            self.block_ptr = torch.zeros(self.in_channels, self.kh, self.kw + 1, dtype=torch.int64)
            ends = counts.cumsum(0).reshape(self.in_channels, self.kh, self.kw)
            self.block_ptr[:, :, 1:] = ends
            self.block_ptr[:, :, 0] = ends[:, :, -1] - counts.reshape(self.in_channels, self.kh, self.kw).sum(-1)
        elif layout == "direct":  # every tap (c, ky, kx) in order, its output channels zero-padded to whole blocks
            self.direct_weights = nn.functional.pad(by_tap, (0, self.padded_out - self.out_channels)).reshape(-1)
        else:
            self.columns = weight[:, tap_channel, self.tap_ky, self.tap_kx].t().contiguous()  # [taps, out_channels]
        self.bias = None if conv.bias is None else conv.bias.detach().to(torch.float32).cpu().clone()
        self.synapses = int(self.vals.numel())
        self.threads = SampleThreads(MIN_SAMPLES_PER_THREAD)
        padding = self.padded_out - self.out_channels if layout in ("blocks", "direct") else 0
        self._start = np.zeros(self.out_channels + padding, np.float32)  # the output buffer's first value
        if self.bias is not None:
            self._start[: self.out_channels] = self.bias.numpy()
        #: :meth:`charge` per input shape and strides (:meth:`_plan`)
        self._plans: dict[tuple[torch.Size, tuple[int, ...]], Callable[[torch.Tensor], np.ndarray]] = {}
        if layout == "rows":
            self._arrays: tuple[np.ndarray, ...] = (self.live.numpy(), self.rows.numpy())
        elif layout == "blocks":
            self._arrays = tuple(
                t.numpy() for t in (self.block_ptr, self.block_offsets, self.block_ky, self.block_vals)
            )
        elif layout == "direct":
            self._arrays = (self.direct_weights.numpy(),)
        else:
            self._arrays = tuple(t.numpy() for t in (self.tap_start, self.tap_ky, self.tap_kx, self.columns))

    @property
    def row_layout(self) -> bool:
        """Whether the compiled kernel adds kernel rows (the "rows" or "blocks" layout: stride 1, dilation 1)."""
        return self.layout in ("rows", "blocks")

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

    @staticmethod
    def kernel_input(x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` input as the kernels read it: float32, and NCHW- or channels-last-contiguous (kept as it is
        when already so: both orders are read in place)."""
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        return x

    def charge(self, x: torch.Tensor) -> np.ndarray:
        """The compiled kernels' output with the bias, ``[N, Ho, Wo, O]`` float32 (channels-last order), for
        ``[N, C, H, W]`` input (made :meth:`kernel_input`; an NCHW- or channels-last-contiguous float32 one is read in
        its own memory order, no copy). The kernel starts every output pixel at the bias (or 0) and adds the events
        to it."""
        x = self.kernel_input(x)
        key = (x.shape, x.stride())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(x)
        return plan(x.detach() if x.requires_grad else x)

    def _plan(self, x: torch.Tensor) -> Callable[[torch.Tensor], np.ndarray]:
        """:meth:`charge` for inputs of ``x``'s shape and strides, with everything that depends only on them (the
        output size, the memory order, the kernel and its arrays) worked out once: a deployed layer sees the same
        few input layouts call after call, and at batch 1 the per-call Python work costs as much as the loop."""
        n, _c, h, w = x.shape
        ho, wo = self.output_size(h, w)
        width, out_channels = self._start.shape[0], self.out_channels
        channels_last = not x.is_contiguous()
        call = self._kernel(channels_last, h, w, wo * width)
        threads = self.threads

        def run(x: torch.Tensor) -> np.ndarray:
            a = x.numpy()
            flat = (a.transpose(0, 2, 3, 1) if channels_last else a).reshape(n, -1)  # a view either way
            out = np.empty((n, ho, wo, width), np.float32)
            if threads.threads_for(n) == 1:
                call(flat, out)
            else:
                threads.run(lambda s, e: call(flat[s:e], out[s:e]), n)
            return out if width == out_channels else np.ascontiguousarray(out[..., :out_channels])

        return run

    def _kernel(self, channels_last: bool, h: int, w: int, row_stride: int) -> Callable[[np.ndarray, np.ndarray], None]:
        """``call(x, out)``: the layout's compiled loop on samples ``x`` (``[n, C*H*W]``, each sample flat in NCHW
        order or, with ``channels_last``, NHWC order) into ``out`` (``[n, Ho, Wo, width]``, one output row
        ``row_stride`` floats). The arrays the loop reads are numpy views of the layout's tensors, taken once at
        construction."""
        k = event_kernels()
        a, start = self._arrays, self._start
        py, px, cl = self.pad_y, self.pad_x, channels_last
        if self.layout == "rows":
            return lambda x, out: k.conv_rows(x, cl, h, w, a[0], a[1], start, out, py, px)
        if self.layout == "blocks":
            shifted = a[1] - a[2] * row_stride  # the blocks' offsets from the spike's output row, for this map width
            return lambda x, out: k.conv_blocks(x, cl, h, w, a[0], a[1], shifted, a[3], start, out, py, px)
        stride, dil = self.stride, self.dilation
        if self.layout == "direct":
            hp, wp, c = h + 2 * py, w + 2 * px, self.in_channels
            tap_c, tap_y, tap_x = np.meshgrid(np.arange(c), np.arange(self.kh), np.arange(self.kw), indexing="ij")
            offsets = ((tap_c * hp + tap_y * dil) * wp + tap_x * dil).reshape(-1).astype(np.int64)  # in the padded map
            return lambda x, out: k.conv_direct(x, cl, h, w, c, py, px, stride, offsets, a[0], start, out)
        return lambda x, out: k.conv_columns(x, cl, h, w, a[0], a[1], a[2], a[3], start, out, stride, py, px, dil)

    def __getstate__(self) -> dict[str, Any]:  # the plans are closures: built again after a copy or unpickling
        return {**self.__dict__, "_plans": {}}

    @inference
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "numba":
            return torch.from_numpy(self.charge(x).transpose(0, 3, 1, 2))  # [N, O, Ho, Wo], channels-last in memory
        x = self.kernel_input(x)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        result = self._torch_forward(x, ho, wo)
        if self.bias is not None:
            result += self.bias
        return result.permute(0, 3, 1, 2)

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
            f"backend={self.backend}, layout={self.layout}"
        )
