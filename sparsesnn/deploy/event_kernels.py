"""The compiled loops of the event-driven layers (numba), one per weight layout.

Every loop adds, for each nonzero input ``x[n, i]`` (a spike, or an analog value ``v``), the weights of ``i``'s
surviving synapses times ``v`` into the output; they differ in how the weights of one input are laid out:

- ``linear_csc`` / ``conv_columns``: single weights (CSC) / whole output columns per tap; scalar or contiguous adds.
- ``linear_columns`` / ``conv_rows``: whole weight columns (Linear) or whole kernel rows (Conv2d at stride 1 and
  dilation 1, the taps of one ``(c, ky)`` side by side, channels-last): one contiguous vectorised add, zeros included.
- ``linear_blocks`` / ``conv_blocks``: only the blocks of :data:`BLOCK` consecutive output channels that hold a
  surviving weight, each added with one 8-lane vector load, fused multiply-add and store (:func:`vector_axpy`):
  the time follows the surviving blocks, which a block-structured mask (``sparse.granularity = "block"``) keeps few.

A scattered single-weight add cannot use the vector unit, and a block of 8 written by a plain numba loop is not
vectorised either (LLVM cannot prove that the weights and the output do not overlap, and an 8-step loop is below
its cost model): :func:`vector_axpy` emits the vector instructions itself. All loops release the GIL
(``nogil``), so :class:`~sparsesnn.deploy.threads.SampleThreads` can run them on slices of the samples at once.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

#: output channels per block of the block layouts: one 8-lane float32 vector (AVX2; two SSE/NEON registers)
BLOCK = 8


class EventKernels(NamedTuple):
    linear_csc: Any
    conv_columns: Any
    linear_columns: Any
    conv_rows: Any
    linear_blocks: Any
    conv_blocks: Any


@functools.cache
def event_kernels() -> EventKernels:
    """The kernels, compiled on first use (once per process); needs numba."""
    import numba
    import numpy as np
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def vector_axpy(typingctx: Any, dst: Any, i: Any, src: Any, j: Any, v: Any) -> Any:
        """``dst[i : i + 8] += src[j : j + 8] * v`` as one 8-lane vector load, multiply-add and store (float32
        arrays, contiguous; no bounds check: the callers' layouts keep both ranges inside their arrays)."""
        sig = types.void(dst, i, src, j, v)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            dst_a, i_a, src_a, j_a, v_a = args
            dst_arr = context.make_array(signature.args[0])(context, builder, dst_a)
            src_arr = context.make_array(signature.args[2])(context, builder, src_a)
            vec = ir.VectorType(ir.FloatType(), BLOCK)
            ii = context.cast(builder, i_a, signature.args[1], types.int64)
            jj = context.cast(builder, j_a, signature.args[3], types.int64)
            d_ptr = builder.bitcast(builder.gep(dst_arr.data, [ii]), vec.as_pointer())
            s_ptr = builder.bitcast(builder.gep(src_arr.data, [jj]), vec.as_pointer())
            scale = context.cast(builder, v_a, signature.args[4], types.float32)
            splat = ir.Constant(vec, None)
            for k in range(BLOCK):
                splat = builder.insert_element(splat, scale, ir.Constant(ir.IntType(32), k))
            total = builder.fadd(builder.load(d_ptr, align=4), builder.fmul(builder.load(s_ptr, align=4), splat))
            builder.store(total, d_ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

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
    def linear_csc(x: Any, indptr: Any, rows: Any, vals: Any, out: Any) -> None:  # pragma: no cover - compiled
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
    def conv_columns(  # pragma: no cover - compiled
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

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def linear_blocks(x: Any, indptr: Any, offsets: Any, vals: Any, out: Any) -> None:  # pragma: no cover
        """Input ``i``'s blocks are ``indptr[i] .. indptr[i+1]``; block ``b`` adds ``vals[8b : 8b+8]`` at output
        ``offsets[b]``."""
        n_samples, n_in = x.shape
        for n in range(n_samples):
            row = out[n]
            for i in range(n_in):
                v = x[n, i]
                if v == 0.0:
                    continue
                for b in range(indptr[i], indptr[i + 1]):
                    vector_axpy(row, offsets[b], vals, b * BLOCK, v)

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def conv_blocks(  # pragma: no cover - compiled
        x: Any, ptr: Any, offsets: Any, shifted: Any, vals: Any, out: Any, pad_y: int, pad_x: int
    ) -> None:
        """The kernel-row geometry of ``conv_rows`` (stride 1, dilation 1, channels-last output) with only the non-empty
        blocks of each row. The blocks of ``(c, ky)`` whose output pixel slot ``p = kw - 1 - kx`` lies in ``[lo, hi)``
        are ``ptr[c, ky, lo] .. ptr[c, ky, hi]``; block ``b`` adds ``vals[8b : 8b+8]`` at ``offsets[b] = p * n_out +
        o0`` from its row's first output pixel. A spike whose whole kernel lands inside the map (most of them) runs all
        the blocks of its channel in one loop, each at ``shifted[b] = offsets[b] - ky * wo * n_out`` (its row ``ky`` up
        from the spike's); a spike at the border clips per row. Each channel's spikes are first gathered into a list
        without a branch, so the loop over them does not mispredict on the zeros."""
        n_samples, n_ch, h, w = x.shape
        ho, wo, n_out = out.shape[1], out.shape[2], out.shape[3]
        kh = ptr.shape[1]
        kw = ptr.shape[2] - 1
        hw = h * w
        row_stride = wo * n_out
        spikes = np.empty(hw, np.int32)
        pixel_y = np.empty(hw, np.int64)  # a position's row and column, looked up instead of divided
        pixel_x = np.empty(hw, np.int64)
        for q in range(hw):
            pixel_y[q] = q // w
            pixel_x[q] = q % w
        for n in range(n_samples):
            flat = out[n].reshape(ho * wo * n_out)
            for c in range(n_ch):
                c0, c1 = ptr[c, 0, 0], ptr[c, kh - 1, kw]
                if c0 == c1:
                    continue  # no synapse left on this input channel
                m = 0
                for iy in range(h):  # the channel's nonzero positions, branch-free
                    for ix in range(w):
                        spikes[m] = iy * w + ix
                        m += x[n, c, iy, ix] != 0.0
                for k in range(m):
                    iy = pixel_y[spikes[k]]
                    ix = pixel_x[spikes[k]]
                    v = x[n, c, iy, ix]
                    ox0 = ix + pad_x - (kw - 1)
                    if iy + pad_y - (kh - 1) >= 0 and iy + pad_y < ho and ox0 >= 0 and ox0 + kw <= wo:
                        base = (iy + pad_y) * row_stride + ox0 * n_out
                        for b in range(c0, c1):
                            vector_axpy(flat, base + shifted[b], vals, b * BLOCK, v)
                        continue
                    lo = max(0, -ox0)
                    hi = min(kw, wo - ox0)
                    if lo >= hi:
                        continue
                    for ky in range(kh):
                        oy = iy + pad_y - ky
                        if oy < 0 or oy >= ho:
                            continue
                        base = oy * row_stride + ox0 * n_out
                        for b in range(ptr[c, ky, lo], ptr[c, ky, hi]):
                            vector_axpy(flat, base + offsets[b], vals, b * BLOCK, v)

    return EventKernels(linear_csc, conv_columns, linear_columns, conv_rows, linear_blocks, conv_blocks)
