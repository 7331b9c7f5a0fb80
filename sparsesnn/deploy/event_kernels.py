"""The compiled loops of the event-driven layers (numba), one per weight layout.

Every loop adds, for each nonzero input ``x[n, i]`` (a spike, or an analog value ``v``), the weights of ``i``'s
surviving synapses times ``v`` into the output; they differ in how the weights of one input are laid out:

- ``linear_csc`` / ``conv_columns``: single weights (CSC) / whole output columns per tap; scalar or contiguous adds.
- ``linear_columns`` / ``conv_rows``: whole weight columns (Linear) or whole kernel rows (Conv2d at stride 1 and
  dilation 1, the taps of one ``(c, ky)`` side by side, channels-last): one contiguous vectorised add, zeros included.
- ``conv_direct``: no events at all: every output pixel gathers its whole receptive field (zeros included) in
  registers, the layout for analog input (a first layer's), where there is nothing to skip.
- ``linear_blocks`` / ``conv_blocks``: only the blocks of :data:`BLOCK` consecutive output channels that hold a
  surviving weight, each added with one 8-lane vector load, fused multiply-add and store (:func:`vector_axpy`):
  the time follows the surviving blocks, which a block-structured mask (``sparse.granularity = "block"``) keeps few.

A scattered single-weight add cannot use the vector unit, and a block of 8 written by a plain numba loop is not
vectorised either (LLVM cannot prove that the weights and the output do not overlap, and an 8-step loop is below
its cost model): :func:`vector_axpy` emits the vector instructions itself. All loops release the GIL
(``nogil``), so :class:`~sparsesnn.deploy.threads.SampleThreads` can run them on slices of the samples at once.

Every loop first finds a sample's nonzero inputs (:func:`nonzeros`): eight inputs per vector compare
(:func:`nonzero_lanes`), the positions of the set bits copied from a table, so that no branch depends on the data.
The conv loops gather them per input channel (:func:`channel_nonzeros`) from NCHW or channels-last input into the
same lists, and start each sample's output at the bias just before adding to it.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

#: output channels per block of the block layouts: one 8-lane float32 vector (AVX2; two SSE/NEON registers)
BLOCK = 8
#: time steps of one sample that ``linear_blocks_steps`` adds together
STEP_GROUP = 4


class EventKernels(NamedTuple):
    linear_csc: Any
    linear_blocks_steps: Any
    conv_columns: Any
    linear_columns: Any
    conv_rows: Any
    linear_blocks: Any
    conv_blocks: Any
    conv_direct: Any


@functools.cache
def event_kernels() -> EventKernels:
    """The kernels, compiled on first use (once per process); needs numba."""
    import numba
    import numpy as np
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    def splat(builder: Any, value: Any, vec: Any) -> Any:
        """``value`` in every lane of a vector of type ``vec``: one insert and one broadcast shuffle."""
        lanes = ir.VectorType(ir.IntType(32), vec.count)
        first = builder.insert_element(ir.Constant(vec, None), value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(first, ir.Constant(vec, None), ir.Constant(lanes, [0] * vec.count))

    def counted_loop(builder: Any, count: Any, name: str, carried: tuple[Any, ...] = ()) -> tuple[Any, list[Any], Any]:
        """Open ``for k in range(count)`` (int64 ``count``) in LLVM IR; the builder is left in the loop's body.
        Returns ``(k, values, close)``: ``values`` are the loop-carried values, starting at ``carried``;
        ``close(next_values)`` ends the body (their values for the next turn) and leaves the builder after the
        loop, where ``values`` hold their last values."""
        i64 = ir.IntType(64)
        entry = builder.block
        head = builder.append_basic_block(name)
        body = builder.append_basic_block(f"{name}_body")
        end = builder.append_basic_block(f"{name}_done")
        builder.branch(head)
        builder.position_at_end(head)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), entry)
        values = []
        for first in carried:
            value = builder.phi(first.type)
            value.add_incoming(first, entry)
            values.append(value)
        builder.cbranch(builder.icmp_signed("<", k, count), body, end)
        builder.position_at_end(body)

        def close(next_values: tuple[Any, ...] = ()) -> None:
            latch = builder.block
            for value, following in zip(values, next_values, strict=True):
                value.add_incoming(following, latch)
            k.add_incoming(builder.add(k, ir.Constant(i64, 1)), latch)
            builder.branch(head)
            builder.position_at_end(end)

        return k, values, close

    def add_product(builder: Any, d_ptr: Any, weights: Any, scale: Any) -> None:
        """``*d_ptr += weights * scale`` on 8-lane float32 vectors: one load, multiply, add and store (the add every
        block kernel makes)."""
        builder.store(builder.fadd(builder.load(d_ptr, align=4), builder.fmul(weights, scale)), d_ptr, align=4)

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
            scale = splat(builder, context.cast(builder, v_a, signature.args[4], types.float32), vec)
            add_product(builder, d_ptr, builder.load(s_ptr, align=4), scale)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def vector_axpy4(
        typingctx: Any, dst: Any, i: Any, stride: Any, src: Any, j: Any, v0: Any, v1: Any, v2: Any, v3: Any
    ) -> Any:
        """``dst[i + k * stride :][:8] += src[j : j + 8] * v_k`` for ``k = 0 .. 3``: one 8-lane load of ``src`` for
        four rows of ``dst`` (a block's weights for four time steps), each one multiply-add and store (float32,
        contiguous; no bounds check). Each row gets :func:`vector_axpy`'s operations."""
        sig = types.void(dst, i, stride, src, j, v0, v1, v2, v3)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            kinds = signature.args
            dst_arr = context.make_array(kinds[0])(context, builder, args[0])
            src_arr = context.make_array(kinds[3])(context, builder, args[3])
            vec = ir.VectorType(ir.FloatType(), BLOCK)
            ii = context.cast(builder, args[1], kinds[1], types.int64)
            step = context.cast(builder, args[2], kinds[2], types.int64)
            jj = context.cast(builder, args[4], kinds[4], types.int64)
            weights = builder.load(builder.bitcast(builder.gep(src_arr.data, [jj]), vec.as_pointer()), align=4)
            for k in range(4):
                scale = splat(builder, context.cast(builder, args[5 + k], kinds[5 + k], types.float32), vec)
                at = builder.add(ii, builder.mul(step, ir.Constant(ir.IntType(64), k)))
                add_product(builder, builder.bitcast(builder.gep(dst_arr.data, [at]), vec.as_pointer()), weights, scale)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def block_to_each(
        typingctx: Any, dst: Any, bases: Any, values: Any, count: Any, shift: Any, src: Any, j: Any
    ) -> Any:
        """``dst[bases[q] + shift :][:8] += src[j : j + 8] * values[q]`` for ``q < count``: one block's weights loaded
        once into a register for all the inputs it is added for (a plain loop reloads them after every store, not
        knowing that ``dst`` and ``src`` do not overlap). Float32 ``dst``, ``src`` and ``values``, int64 ``bases``;
        contiguous; no bounds check. Each add is :func:`vector_axpy`'s."""
        sig = types.void(dst, bases, values, count, shift, src, j)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            kinds = signature.args
            dst_arr, bases_arr, values_arr, src_arr = (
                context.make_array(kinds[k])(context, builder, args[k]) for k in (0, 1, 2, 5)
            )
            total, offset, jj = (context.cast(builder, args[k], kinds[k], types.int64) for k in (3, 4, 6))
            vec = ir.VectorType(ir.FloatType(), BLOCK)
            weights = builder.load(builder.bitcast(builder.gep(src_arr.data, [jj]), vec.as_pointer()), align=4)
            q, _, close = counted_loop(builder, total, "input")
            base = context.cast(builder, builder.load(builder.gep(bases_arr.data, [q])), kinds[1].dtype, types.int64)
            value = context.cast(
                builder, builder.load(builder.gep(values_arr.data, [q])), kinds[2].dtype, types.float32
            )
            d_ptr = builder.bitcast(builder.gep(dst_arr.data, [builder.add(base, offset)]), vec.as_pointer())
            add_product(builder, d_ptr, weights, splat(builder, value, vec))
            close()
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def nonzero_lanes(typingctx: Any, src: Any, j: Any) -> Any:
        """The lanes of ``src[j : j + 8]`` that are not zero, as the bits of an int64 (bit ``k`` for ``src[j + k]``;
        a NaN counts as nonzero, a -0.0 as zero, as ``!= 0.0`` does): one 8-lane load and compare (float32,
        contiguous; no bounds check)."""
        sig = types.int64(src, j)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            src_arr = context.make_array(signature.args[0])(context, builder, args[0])
            vec = ir.VectorType(ir.FloatType(), BLOCK)
            jj = context.cast(builder, args[1], signature.args[1], types.int64)
            ptr = builder.bitcast(builder.gep(src_arr.data, [jj]), vec.as_pointer())
            lanes = builder.fcmp_unordered("!=", builder.load(ptr, align=4), ir.Constant(vec, [0.0] * BLOCK))
            return builder.zext(builder.bitcast(lanes, ir.IntType(BLOCK)), ir.IntType(64))

        return sig, codegen

    @intrinsic
    def store_positions(typingctx: Any, dst: Any, i: Any, table: Any, j: Any, offset: Any) -> Any:
        """``dst[i : i + 8] = table[j : j + 8] + offset`` as one 8-lane int32 load, add and store (int32 arrays,
        contiguous; no bounds check)."""
        sig = types.void(dst, i, table, j, offset)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            dst_arr = context.make_array(signature.args[0])(context, builder, args[0])
            table_arr = context.make_array(signature.args[2])(context, builder, args[2])
            vec = ir.VectorType(ir.IntType(32), BLOCK)
            ii = context.cast(builder, args[1], signature.args[1], types.int64)
            jj = context.cast(builder, args[3], signature.args[3], types.int64)
            d_ptr = builder.bitcast(builder.gep(dst_arr.data, [ii]), vec.as_pointer())
            t_ptr = builder.bitcast(builder.gep(table_arr.data, [jj]), vec.as_pointer())
            shift = splat(builder, context.cast(builder, args[4], signature.args[4], types.int32), vec)
            builder.store(builder.add(builder.load(t_ptr, align=4), shift), d_ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def lowest_bit(typingctx: Any, mask: Any) -> Any:
        """The index of the lowest set bit of a nonzero int64 (one ``tzcnt``)."""
        sig = types.int64(types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

        return sig, codegen

    def receptive_dot(vectors: int) -> Any:
        """An intrinsic ``f(dst, i, weights, j, width, src, corner, offsets, taps, start, s)``: ``dst[i : i + 8v] =
        start[s : s + 8v] + sum_t weights[j + t * width :][: 8v] * src[corner + offsets[t]]`` for ``t < taps``, with
        ``v = vectors`` 8-lane accumulators held in registers over the whole sum (float32 ``dst``, ``weights``,
        ``src``, ``start``; int64 ``offsets``; contiguous; no bounds check). A plain numba loop keeps the output in
        memory and is not vectorised."""

        @intrinsic
        def dot(
            typingctx: Any,
            dst: Any,
            i: Any,
            weights: Any,
            j: Any,
            width: Any,
            src: Any,
            corner: Any,
            offsets: Any,
            taps: Any,
            start: Any,
            s: Any,
        ) -> Any:
            sig = types.void(dst, i, weights, j, width, src, corner, offsets, taps, start, s)

            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                kinds = signature.args
                dst_a, weights_a, src_a, offsets_a, start_a = (
                    context.make_array(kinds[k])(context, builder, args[k]) for k in (0, 2, 5, 7, 9)
                )
                i64 = ir.IntType(64)
                ii, jj, step, base, count, ss = (
                    context.cast(builder, args[k], kinds[k], types.int64) for k in (1, 3, 4, 6, 8, 10)
                )
                vec = ir.VectorType(ir.FloatType(), BLOCK)

                def at(array: Any, index: Any, lane: int) -> Any:
                    pointer = builder.gep(array.data, [builder.add(index, ir.Constant(i64, BLOCK * lane))])
                    return builder.bitcast(pointer, vec.as_pointer())

                firsts = tuple(builder.load(at(start_a, ss, q), align=4) for q in range(vectors))
                t, sums, close = counted_loop(builder, count, "tap", firsts)
                offset = builder.load(builder.gep(offsets_a.data, [t]))
                value = splat(builder, builder.load(builder.gep(src_a.data, [builder.add(base, offset)])), vec)
                row = builder.add(jj, builder.mul(t, step))
                products = (
                    builder.fmul(builder.load(at(weights_a, row, q), align=4), value, flags=["fast"])
                    for q in range(vectors)
                )
                close(tuple(builder.fadd(total, p, flags=["fast"]) for total, p in zip(sums, products, strict=True)))
                for q, total in enumerate(sums):
                    builder.store(total, at(dst_a, ii, q), align=4)
                return context.get_dummy_value()

            return sig, codegen

        return dot

    dot_one = receptive_dot(1)
    dot_four = receptive_dot(4)

    # for each 8-bit lane mask: the positions of its set bits, ascending (then padding), and how many there are
    bit_positions = np.zeros((1 << BLOCK) * BLOCK, np.int32)  # row ``lanes``: ``bit_positions[8 * lanes :][:8]``
    bit_counts = np.zeros(1 << BLOCK, np.int64)
    for lanes in range(1 << BLOCK):
        bits = [k for k in range(BLOCK) if lanes >> k & 1]
        bit_positions[lanes * BLOCK : lanes * BLOCK + len(bits)] = bits
        bit_counts[lanes] = len(bits)

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def nonzeros(row: Any, start: int, count: int, found: Any) -> int:  # pragma: no cover - compiled
        """The positions ``q`` (ascending) of the nonzero values ``row[start + q]``, ``q < count``, written to
        ``found`` (which holds ``count + 8``: each load writes eight slots); returns how many. Eight values are tested
        per load (:func:`nonzero_lanes`) and their positions copied from a table by the lane mask, so the scan has no
        branch that depends on the data (a branch per value, or per set bit, mispredicts at any useful rate)."""
        m = 0
        full = count - count % BLOCK
        for q0 in range(0, full, BLOCK):
            mask = nonzero_lanes(row, start + q0)
            store_positions(found, m, bit_positions, mask * BLOCK, q0)
            m += bit_counts[mask]
        for q in range(full, count):
            found[m] = q
            m += row[start + q] != 0.0
        return m

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def channel_nonzeros(  # pragma: no cover - compiled
        row: Any, channels_last: bool, n_ch: int, hw: int, live: Any, found: Any, counts: Any
    ) -> None:
        """One sample's nonzero inputs by channel: ``found[c, :counts[c]]`` are the positions ``iy * w + ix``
        (ascending) where channel ``c`` is nonzero, for ``row`` the sample flat in NCHW order or, with
        ``channels_last``, NHWC order. Channels with ``live[c] == 0`` are skipped (counted 0) in NCHW order. Either
        order gives the same lists, so the kernels add in the same order whatever the input's memory layout."""
        if not channels_last:
            for c in range(n_ch):
                counts[c] = nonzeros(row, c * hw, hw, found[c]) if live[c] else 0
            return
        for c in range(n_ch):
            counts[c] = 0
        full = n_ch - n_ch % BLOCK
        for q in range(hw):
            base = q * n_ch
            for c0 in range(0, full, BLOCK):
                mask = nonzero_lanes(row, base + c0)
                while mask != 0:
                    c = c0 + lowest_bit(mask)
                    found[c, counts[c]] = q
                    counts[c] += 1
                    mask &= mask - 1
            for c in range(full, n_ch):
                found[c, counts[c]] = q
                counts[c] += row[base + c] != 0.0

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def pixel_tables(h: int, w: int) -> Any:  # pragma: no cover - compiled
        """Each position ``q = iy * w + ix``'s row and column, looked up per spike instead of divided."""
        pixel_y = np.empty(h * w, np.int64)
        pixel_x = np.empty(h * w, np.int64)
        for q in range(h * w):
            pixel_y[q] = q // w
            pixel_x[q] = q % w
        return pixel_y, pixel_x

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def fill_rows(out: Any, start: Any) -> None:  # pragma: no cover - compiled
        """Every row of the 2-D ``out`` set to ``start`` (the bias, or zeros)."""
        for r in range(out.shape[0]):
            row = out[r]
            for o in range(start.shape[0]):
                row[o] = start[o]

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def begin_vector(x: Any, out: Any, n: int, start: Any, found: Any) -> Any:  # pragma: no cover - compiled
        """Sample ``n`` of a Linear kernel: its output row set to ``start``, its nonzero inputs' positions into
        ``found``; returns ``(x[n], out[n], how many)``."""
        xn, row = x[n], out[n]
        fill_rows(out[n : n + 1], start)
        return xn, row, nonzeros(xn, 0, xn.shape[0], found)

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def begin_map(  # pragma: no cover - compiled
        x: Any, out: Any, n: int, start: Any, channels_last: bool, live: Any, found: Any, counts: Any
    ) -> Any:
        """Sample ``n`` of a conv kernel: its output (``[Ho, Wo, width]``) set to ``start`` at every pixel, just before
        it is added to, and its nonzero inputs gathered by channel (:func:`channel_nonzeros`); returns ``x[n]``."""
        xn = x[n]
        fill_rows(out[n].reshape(out.shape[1] * out.shape[2], out.shape[3]), start)
        channel_nonzeros(xn, channels_last, live.shape[0], found.shape[1] - BLOCK, live, found, counts)
        return xn

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
    def linear_csc(x: Any, indptr: Any, rows: Any, vals: Any, start: Any, out: Any) -> None:  # pragma: no cover
        n_samples, n_in = x.shape
        found = np.empty(n_in + BLOCK, np.int32)
        for n in range(n_samples):
            xn, row, m = begin_vector(x, out, n, start, found)
            for k in range(m):
                i = found[k]
                v = xn[i]
                for e in range(indptr[i], indptr[i + 1]):
                    row[rows[e]] += vals[e] * v

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def linear_columns(x: Any, columns: Any, start: Any, out: Any) -> None:  # pragma: no cover - compiled
        n_samples, n_in = x.shape
        found = np.empty(n_in + BLOCK, np.int32)
        for n in range(n_samples):
            xn, row, m = begin_vector(x, out, n, start, found)
            for k in range(m):
                i = found[k]
                add_scaled(row, columns[i], xn[i])

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def linear_blocks(x: Any, indptr: Any, offsets: Any, vals: Any, start: Any, out: Any) -> None:  # pragma: no cover
        """Input ``i``'s blocks are ``indptr[i] .. indptr[i+1]``; block ``b`` adds ``vals[8b : 8b+8]`` at output
        ``offsets[b]``."""
        n_samples, n_in = x.shape
        found = np.empty(n_in + BLOCK, np.int32)
        for n in range(n_samples):
            xn, row, m = begin_vector(x, out, n, start, found)
            for k in range(m):
                i = found[k]
                v = xn[i]
                for b in range(indptr[i], indptr[i + 1]):
                    vector_axpy(row, offsets[b], vals, b * BLOCK, v)

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def union_nonzeros(x: Any, b: int, t0: int, t1: int, seen: Any, found: Any) -> int:  # pragma: no cover
        """The positions (ascending) where any of ``x[t0:t1, b]`` is nonzero, into ``found``; returns how many.
        ``seen`` (a row's length plus 8) is scratch."""
        n_in = x.shape[2]
        first = x[t0, b]
        for i in range(n_in):
            seen[i] = np.float32(1.0) if first[i] != 0.0 else np.float32(0.0)
        for t in range(t0 + 1, t1):
            xt = x[t, b]
            for i in range(n_in):
                seen[i] = np.float32(1.0) if (seen[i] != 0.0) | (xt[i] != 0.0) else np.float32(0.0)
        return nonzeros(seen, 0, n_in, found)

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def linear_blocks_steps(  # pragma: no cover - compiled
        x: Any, indptr: Any, offsets: Any, vals: Any, start: Any, out: Any, b0: int, b1: int
    ) -> None:
        """``linear_blocks`` for samples ``b0 .. b1`` of ``x`` ``[T, B, in]`` into ``out`` ``[T, B, width]`` (both
        C-contiguous), a sample's time steps together, up to :data:`STEP_GROUP` at once: an input nonzero in any of
        them loads each of its blocks once and adds it to every step's row, scaled by that step's value (a zero adds
        ``w * 0``, which changes nothing for finite weights). Each row gets ``linear_blocks``'s float operations in
        its order, but for those zeros: the same outputs. It saves the weight loads and the per-input loop that the
        steps share (their spikes are correlated in time)."""
        steps, batch, n_in = x.shape
        width = out.shape[2]
        found = np.empty(n_in + BLOCK, np.int32)
        seen = np.empty(n_in + BLOCK, np.float32)
        for b in range(b0, b1):
            for t in range(steps):
                row = out[t, b]
                for o in range(width):
                    row[o] = start[o]
            for t0 in range(0, steps, STEP_GROUP):
                t1 = min(t0 + STEP_GROUP, steps)
                m = union_nonzeros(x, b, t0, t1, seen, found)
                if t1 - t0 == 4:  # the usual group: each block loaded once into four rows
                    first, rows = (t0 * batch + b) * width, batch * width
                    for k in range(m):
                        i = found[k]
                        v0, v1, v2, v3 = x[t0, b, i], x[t0 + 1, b, i], x[t0 + 2, b, i], x[t0 + 3, b, i]
                        for blk in range(indptr[i], indptr[i + 1]):
                            vector_axpy4(out, first + offsets[blk], rows, vals, blk * BLOCK, v0, v1, v2, v3)
                    continue
                for k in range(m):
                    i = found[k]
                    for blk in range(indptr[i], indptr[i + 1]):
                        off = offsets[blk]
                        for t in range(t0, t1):
                            vector_axpy(out, (t * batch + b) * width + off, vals, blk * BLOCK, x[t, b, i])

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def conv_columns(  # pragma: no cover - compiled
        x: Any,
        channels_last: bool,
        h: int,
        w: int,
        tap_start: Any,
        tap_ky: Any,
        tap_kx: Any,
        columns: Any,
        start: Any,
        out: Any,
        stride: int,
        pad_y: int,
        pad_x: int,
        dil: int,
    ) -> None:
        n_samples = x.shape[0]
        n_ch = tap_start.shape[0] - 1
        ho, wo = out.shape[1], out.shape[2]
        hw = h * w
        found = np.empty((n_ch, hw + BLOCK), np.int32)
        counts = np.empty(n_ch, np.int64)
        live = (tap_start[1:] > tap_start[:-1]).astype(np.uint8)
        for n in range(n_samples):
            xn = begin_map(x, out, n, start, channels_last, live, found, counts)
            for c in range(n_ch):
                t0, t1 = tap_start[c], tap_start[c + 1]
                if t0 == t1:
                    continue
                for k in range(counts[c]):
                    q = found[c, k]
                    iy, ix = q // w, q % w
                    v = xn[q * n_ch + c] if channels_last else xn[c * hw + q]
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
    def conv_rows(  # pragma: no cover - compiled
        x: Any, channels_last: bool, h: int, w: int, live: Any, rows: Any, start: Any, out: Any, pad_y: int, pad_x: int
    ) -> None:
        n_samples = x.shape[0]
        n_ch, kh = rows.shape[0], rows.shape[1]
        ho, wo, n_out = out.shape[1], out.shape[2], out.shape[3]
        kw = rows.shape[2] // n_out
        hw = h * w
        found = np.empty((n_ch, hw + BLOCK), np.int32)
        counts = np.empty(n_ch, np.int64)
        pixel_y, pixel_x = pixel_tables(h, w)
        for n in range(n_samples):
            xn = begin_map(x, out, n, start, channels_last, live, found, counts)
            flat_out = out[n].reshape(ho, wo * n_out)  # a view: one output row's pixels x channels, contiguous
            for c in range(n_ch):
                if not live[c]:
                    continue
                for k in range(counts[c]):
                    q = found[c, k]
                    iy, ix = pixel_y[q], pixel_x[q]
                    v = xn[q * n_ch + c] if channels_last else xn[c * hw + q]
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
    def conv_blocks(  # pragma: no cover - compiled
        x: Any,
        channels_last: bool,
        h: int,
        w: int,
        ptr: Any,
        offsets: Any,
        shifted: Any,
        vals: Any,
        start: Any,
        out: Any,
        pad_y: int,
        pad_x: int,
    ) -> None:
        """The kernel-row geometry of ``conv_rows`` (stride 1, dilation 1, channels-last output) with only the non-empty
        blocks of each row. The blocks of ``(c, ky)`` whose output pixel slot ``p = kw - 1 - kx`` lies in ``[lo, hi)``
        are ``ptr[c, ky, lo] .. ptr[c, ky, hi]``; block ``b`` adds ``vals[8b : 8b+8]`` at ``offsets[b] = p * n_out +
        o0`` from its row's first output pixel. A spike whose whole kernel lands inside the map (most of them) runs all
        the blocks of its channel in one loop, each at ``shifted[b] = offsets[b] - ky * wo * n_out`` (its row ``ky`` up
        from the spike's); a spike at the border clips per row."""
        n_samples = x.shape[0]
        n_ch, kh, kw = ptr.shape[0], ptr.shape[1], ptr.shape[2] - 1
        ho, wo, n_out = out.shape[1], out.shape[2], out.shape[3]
        hw = h * w
        row_stride = wo * n_out
        found = np.empty((n_ch, hw + BLOCK), np.int32)
        counts = np.empty(n_ch, np.int64)
        live = np.empty(n_ch, np.uint8)
        for c in range(n_ch):
            live[c] = ptr[c, 0, 0] != ptr[c, kh - 1, kw]  # a synapse left on this input channel
        pixel_y, pixel_x = pixel_tables(h, w)
        bases = np.empty(hw, np.int64)  # one channel's interior inputs: output offset of the spike's row, and value
        values = np.empty(hw, np.float32)
        border = np.empty(hw, np.int32)  # and its inputs whose kernel crosses the map's edge
        for n in range(n_samples):
            xn = begin_map(x, out, n, start, channels_last, live, found, counts)
            flat = out[n].reshape(ho * wo * n_out)
            for c in range(n_ch):
                if not live[c]:
                    continue
                inner = 0
                edge = 0
                for k in range(counts[c]):  # split into interior and border inputs, without a branch
                    q = found[c, k]
                    iy = pixel_y[q] + pad_y
                    ox0 = pixel_x[q] + pad_x - (kw - 1)
                    inside = (iy - (kh - 1) >= 0) & (iy < ho) & (ox0 >= 0) & (ox0 + kw <= wo)
                    bases[inner] = iy * row_stride + ox0 * n_out
                    values[inner] = xn[q * n_ch + c] if channels_last else xn[c * hw + q]
                    border[edge] = q
                    inner += inside
                    edge += 1 - inside
                for b in range(ptr[c, 0, 0], ptr[c, kh - 1, kw]):  # block-outer: its weights and offset stay put
                    block_to_each(flat, bases, values, inner, shifted[b], vals, b * BLOCK)
                for j in range(edge):
                    q = border[j]
                    iy = pixel_y[q]
                    v = xn[q * n_ch + c] if channels_last else xn[c * hw + q]
                    ox0 = pixel_x[q] + pad_x - (kw - 1)
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

    @numba.njit(nogil=True, cache=False, boundscheck=False, fastmath=True)
    def conv_direct(  # pragma: no cover - compiled
        x: Any,
        channels_last: bool,
        h: int,
        w: int,
        n_ch: int,
        pad_y: int,
        pad_x: int,
        stride: int,
        offsets: Any,
        weights: Any,
        start: Any,
        out: Any,
    ) -> None:
        """Every output pixel gathers its whole receptive field, zeros included: the sample copied into a zero-padded
        NCHW map (``h + 2 pad_y`` by ``w + 2 pad_x``), then for each pixel and each group of 32 (then 8) output
        channels ``out = start + sum_t weights[t] * padded[corner + offsets[t]]`` over the taps ``t = (c, ky, kx)``,
        summed in registers (``dot_four`` / ``dot_one``). ``offsets[t] = (c * hp + ky * dil) * wp + kx * dil``;
        ``weights`` ``[taps * width]``, tap-major, ``width`` (the output's last dimension) a multiple of 8."""
        n_samples = x.shape[0]
        ho, wo, width = out.shape[1], out.shape[2], out.shape[3]
        hp, wp = h + 2 * pad_y, w + 2 * pad_x
        hw = h * w
        taps = offsets.shape[0]
        padded = np.zeros(n_ch * hp * wp, np.float32)
        for n in range(n_samples):
            xn = x[n]
            for c in range(n_ch):
                for iy in range(h):
                    row = (c * hp + iy + pad_y) * wp + pad_x
                    for ix in range(w):
                        q = iy * w + ix
                        padded[row + ix] = xn[q * n_ch + c] if channels_last else xn[c * hw + q]
            flat = out[n].reshape(ho * wo * width)
            for oy in range(ho):
                for ox in range(wo):
                    base = (oy * wo + ox) * width
                    corner = oy * stride * wp + ox * stride
                    o0 = 0
                    while o0 + 4 * BLOCK <= width:
                        dot_four(flat, base + o0, weights, o0, width, padded, corner, offsets, taps, start, o0)
                        o0 += 4 * BLOCK
                    while o0 < width:
                        dot_one(flat, base + o0, weights, o0, width, padded, corner, offsets, taps, start, o0)
                        o0 += BLOCK

    return EventKernels(
        linear_csc,
        linear_blocks_steps,
        conv_columns,
        linear_columns,
        conv_rows,
        linear_blocks,
        conv_blocks,
        conv_direct,
    )
