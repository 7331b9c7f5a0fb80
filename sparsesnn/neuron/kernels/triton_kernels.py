"""The LIF time loop as Triton kernels, for CUDA: one program per block of neurons, the membrane in float32 registers
across all ``T`` steps, one read of the input and one write of each output per element.

The same arithmetic as :mod:`sparsesnn.lif_kernels` (see there for what is saved and why, and
:mod:`sparsesnn.neurons` for the equations); loads and stores use the tensors' own dtype (float32, bf16, fp16), all
arithmetic is float32. Eager calls launch the kernels directly; a call a compiler traces (the ``sparsesnn::lif_*``
operators of :mod:`sparsesnn.lif_op` under ``torch.compile``) launches them through ``torch.library.wrap_triton``, so
the compiler sees them and calls them from its generated code without a Python wrapper. Without Triton (a CPU-only
install) this module defines nothing and :data:`AVAILABLE` is False.

Memory traffic per element and step: forward reads ``X`` and writes ``S`` and ``U`` (3 x the dtype's bytes);
backward reads ``dL/dS`` and ``U`` (and ``U[t-1]`` for a learnable tau) and writes ``dL/dX``.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the pure-torch kernels of sparsesnn.lif_kernels serve every device
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

AVAILABLE = triton is not None

#: neurons per program; 8 per thread with 4 warps, i.e. 16-byte accesses in bf16/fp16 and two in float32
BLOCK = 1024
NUM_WARPS = 4

if AVAILABLE:

    @triton.jit
    def _surrogate_grad(u, param, SURROGATE: tl.constexpr):  # type: ignore[no-untyped-def]
        """``sigma'(u)`` of the surrogate numbered as in :data:`sparsesnn.lif_op.SURROGATE_CODES`."""
        if SURROGATE == 0:  # ATan(alpha): alpha / 2 / (1 + (pi/2 alpha u)^2)
            z = 1.5707963267948966 * param * u
            g = (param * 0.5) / (1.0 + z * z)
        elif SURROGATE == 1:  # Sigmoid(alpha): alpha sig(alpha u) (1 - sig(alpha u))
            sg = tl.sigmoid(param * u)
            g = param * sg * (1.0 - sg)
        elif SURROGATE == 2:  # Rectangular(width): 1/width inside |u| < width/2
            g = tl.where(tl.abs(u) < param * 0.5, 1.0 / param, 0.0)
        elif SURROGATE == 3:  # SuperSpike(beta): 1 / (1 + beta |u|)^2
            d = 1.0 + param * tl.abs(u)
            g = 1.0 / (d * d)
        else:  # Triangle(gamma): max(0, gamma - |u|) / gamma^2
            g = tl.maximum(param - tl.abs(u), 0.0) / (param * param)
        return g

    @triton.jit
    def _lif_forward_kernel(  # type: ignore[no-untyped-def]
        x_ptr,
        k_ptr,
        s_ptr,
        u_ptr,
        n_neurons,
        n_steps,
        k_value,
        v_threshold,
        v_reset,
        K_FROM_PTR: tl.constexpr,
        DECAY_INPUT: tl.constexpr,
        HARD_RESET: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        keep = offs < n_neurons
        # float scalars arrive as fp32 from an eager launch and as fp64 from torch.compile's generated code
        v_threshold = tl.cast(v_threshold, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        if K_FROM_PTR:
            k = tl.load(k_ptr).to(tl.float32)
        else:
            k = tl.cast(k_value, tl.float32)
        v = tl.zeros([BLOCK_SIZE], dtype=tl.float32) + v_reset
        idx = offs  # int64: (t * n_neurons + neuron), advanced by n_neurons per step
        for _t in range(n_steps):
            x = tl.load(x_ptr + idx, mask=keep, other=0.0).to(tl.float32)
            if DECAY_INPUT:
                h = v + k * (x - (v - v_reset))
            else:
                h = v - k * (v - v_reset) + x
            u = h - v_threshold
            s = (u >= 0.0).to(tl.float32)
            if HARD_RESET:
                v = h * (1.0 - s) + v_reset * s
            else:
                v = h - v_threshold * s
            tl.store(s_ptr + idx, s.to(s_ptr.dtype.element_ty), mask=keep)
            tl.store(u_ptr + idx, u.to(u_ptr.dtype.element_ty), mask=keep)
            idx += n_neurons

    @triton.jit
    def _lif_backward_kernel(  # type: ignore[no-untyped-def]
        g_ptr,
        u_ptr,
        k_ptr,
        gx_ptr,
        gk_ptr,
        n_neurons,
        n_steps,
        last_step_offset,
        k_value,
        v_threshold,
        v_reset,
        surrogate_param,
        K_FROM_PTR: tl.constexpr,
        DECAY_INPUT: tl.constexpr,
        HARD_RESET: tl.constexpr,
        DETACH_RESET: tl.constexpr,
        SURROGATE: tl.constexpr,
        NEED_K_GRAD: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        keep = offs < n_neurons
        v_threshold = tl.cast(v_threshold, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        surrogate_param = tl.cast(surrogate_param, tl.float32)
        if K_FROM_PTR:
            k = tl.load(k_ptr).to(tl.float32)
        else:
            k = tl.cast(k_value, tl.float32)
        grad_v = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        grad_k = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        idx = offs + last_step_offset  # int64: (t * n_neurons + neuron), from t = T - 1 down
        for i in range(n_steps):
            t = n_steps - 1 - i
            u = tl.load(u_ptr + idx, mask=keep, other=-1.0).to(tl.float32)
            h = u + v_threshold
            s = (u >= 0.0).to(tl.float32)
            sg = _surrogate_grad(u, surrogate_param, SURROGATE)
            if HARD_RESET:
                if DETACH_RESET:
                    dv_dh = 1.0 - s
                else:
                    dv_dh = (1.0 - s) + (v_reset - h) * sg
            else:
                if DETACH_RESET:
                    dv_dh = tl.zeros([BLOCK_SIZE], dtype=tl.float32) + 1.0
                else:
                    dv_dh = 1.0 - v_threshold * sg
            g = tl.load(g_ptr + idx, mask=keep, other=0.0).to(tl.float32)
            grad_h = g * sg + grad_v * dv_dh
            if DECAY_INPUT:
                gx = grad_h * k
            else:
                gx = grad_h
            tl.store(gx_ptr + idx, gx.to(gx_ptr.dtype.element_ty), mask=keep)
            if NEED_K_GRAD:
                has_prev = t > 0
                # a mask from the index (idx >= n_neurons iff t > 0 on the kept lanes), not keep & has_prev: the
                # interpreter refuses a mask combined with a scalar boolean
                up = tl.load(u_ptr + idx - n_neurons, mask=keep & (idx >= n_neurons), other=-1.0).to(tl.float32)
                sp = (up >= 0.0).to(tl.float32)
                hp = up + v_threshold
                if HARD_RESET:
                    v_prev = hp * (1.0 - sp) + v_reset * sp
                else:
                    v_prev = hp - v_threshold * sp
                v_prev = tl.where(has_prev, v_prev, v_reset)
                if DECAY_INPUT:
                    grad_k += grad_h * (h - v_prev) / k
                else:
                    grad_k -= grad_h * (v_prev - v_reset)
            grad_v = grad_h * (1.0 - k)
            idx -= n_neurons
        if NEED_K_GRAD:
            tl.store(gk_ptr + pid, tl.sum(tl.where(keep, grad_k, 0.0), axis=0))


def _launcher(kernel: Any, traced: bool) -> Any:
    """``kernel`` itself for a direct launch, or wrapped by ``torch.library.wrap_triton`` when a compiler is tracing
    the call (fake or functional tensors), so that the launch is recorded in its graph."""
    return torch.library.wrap_triton(kernel) if traced else kernel


def _grid(n_neurons: int) -> tuple[int]:
    return (max(1, triton.cdiv(n_neurons, BLOCK)),)


def lif_forward(
    x: torch.Tensor,
    k: torch.Tensor | None,
    k_value: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    traced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, U)`` for ``x`` ``[T, N]`` (contiguous), both in ``x``'s dtype; ``k`` (a 0-d tensor) or ``k_value``."""
    steps, neurons = x.shape
    spikes = torch.empty_like(x)
    charge = torch.empty_like(x)
    _launcher(_lif_forward_kernel, traced)[_grid(neurons)](
        x,
        k if k is not None else x,
        spikes,
        charge,
        neurons,
        steps,
        float(k_value),
        float(v_threshold),
        float(v_reset),
        K_FROM_PTR=k is not None,
        DECAY_INPUT=decay_input,
        HARD_RESET=hard_reset,
        BLOCK_SIZE=BLOCK,
        num_warps=NUM_WARPS,
    )
    return spikes, charge


def lif_backward(
    grad_spikes: torch.Tensor,
    charge: torch.Tensor,
    k: torch.Tensor | None,
    k_value: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: int,
    surrogate_param: float,
    need_k_grad: bool,
    traced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dX [T, N] in U's dtype, dL/dk as a 0-d float32 tensor)``; inputs contiguous. Without ``need_k_grad`` the
    second tensor is unset memory that the caller does not read (no extra kernel for a constant tau)."""
    steps, neurons = charge.shape
    grad_x = torch.empty_like(charge)
    grid = _grid(neurons)
    # per-program partial sums of dL/dk (every program writes its entry); a placeholder when dL/dk is not needed
    partial_k = torch.empty(grid[0] if need_k_grad else 1, device=charge.device, dtype=torch.float32)
    _launcher(_lif_backward_kernel, traced)[grid](
        grad_spikes,
        charge,
        k if k is not None else charge,
        grad_x,
        partial_k,
        neurons,
        steps,
        (steps - 1) * neurons,
        float(k_value),
        float(v_threshold),
        float(v_reset),
        float(surrogate_param),
        K_FROM_PTR=k is not None,
        DECAY_INPUT=decay_input,
        HARD_RESET=hard_reset,
        DETACH_RESET=detach_reset,
        SURROGATE=surrogate,
        NEED_K_GRAD=need_k_grad,
        BLOCK_SIZE=BLOCK,
        num_warps=NUM_WARPS,
    )
    return grad_x, partial_k.sum() if need_k_grad else partial_k[0]
