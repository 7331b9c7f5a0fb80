"""The LIF time loop as Triton kernels, for CUDA: one program per block of neurons, the membrane in float32 registers
across all ``T`` steps, one read of the input and one write of each output per element.

The same arithmetic as :mod:`sparsesnn.neuron.kernels.loops` (see there for what is saved and why, and
:mod:`sparsesnn.neuron.functional` for the equations); loads and stores use the tensors' own dtype (float32, bf16,
fp16), all arithmetic is float32. The wrappers take the settings as one
:class:`~sparsesnn.neuron.kernels.params.LIFParameters` and ``inv_tau`` (1/tau: a float, or a 0-d tensor read by the
kernel) and flatten them at the launch. Eager calls launch the kernels directly; a call a compiler traces (the
``sparsesnn::lif_*`` operators of :mod:`sparsesnn.neuron.kernels.op` under ``torch.compile``) launches them through
``torch.library.wrap_triton``, so the compiler sees them and calls them from its generated code without a Python
wrapper. Without Triton (a CPU-only install) this module defines no kernels and :data:`AVAILABLE` is False. With
``TRITON_INTERPRET=1`` set before Triton is imported, the kernels run on CPU tensors (tests/test_triton_interpreter.py).

Memory traffic per element and step: forward reads ``X`` and writes the spikes and the charge (3 x the dtype's
bytes); backward reads ``dL/dS`` and the charge (and the previous step's charge for a learnable tau) and writes
``dL/dX``.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsesnn.neuron.kernels.params import LIFParameters, surrogate_code

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch loops of sparsesnn.neuron.kernels.loops serve every device
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

AVAILABLE = triton is not None

#: neurons per program; 8 per thread with 4 warps, i.e. 16-byte accesses in bf16/fp16 and two in float32
BLOCK = 1024
NUM_WARPS = 4

if AVAILABLE:

    @triton.jit
    def _surrogate_grad(x, param, SURROGATE: tl.constexpr):  # type: ignore[no-untyped-def]
        """``sigma'(x)`` of the surrogate numbered as in :data:`sparsesnn.neuron.kernels.params.SURROGATE_CODES`."""
        if SURROGATE == 0:  # ATan(alpha): alpha / 2 / (1 + (pi/2 alpha x)^2)
            z = 1.5707963267948966 * param * x
            g = (param * 0.5) / (1.0 + z * z)
        elif SURROGATE == 1:  # Sigmoid(alpha): alpha sig(alpha x) (1 - sig(alpha x))
            sg = tl.sigmoid(param * x)
            g = param * sg * (1.0 - sg)
        elif SURROGATE == 2:  # Rectangular(width): 1/width inside |x| < width/2
            g = tl.where(tl.abs(x) < param * 0.5, 1.0 / param, 0.0)
        elif SURROGATE == 3:  # SuperSpike(beta): 1 / (1 + beta |x|)^2
            d = 1.0 + param * tl.abs(x)
            g = 1.0 / (d * d)
        else:  # Triangle(gamma): max(0, gamma - |x|) / gamma^2
            g = tl.maximum(param - tl.abs(x), 0.0) / (param * param)
        return g

    @triton.jit
    def _inv_tau(inv_tau_ptr, inv_tau_value, FROM_PTR: tl.constexpr):  # type: ignore[no-untyped-def]
        """``1/tau`` in float32: read from the 0-d tensor at ``inv_tau_ptr`` (a learnable tau), else the value."""
        if FROM_PTR:
            inv_tau = tl.load(inv_tau_ptr).to(tl.float32)
        else:
            inv_tau = tl.cast(inv_tau_value, tl.float32)
        return inv_tau

    @triton.jit
    def _lif_forward_kernel(  # type: ignore[no-untyped-def]
        x_ptr,
        inv_tau_ptr,
        spikes_ptr,
        charge_ptr,
        n_neurons,
        n_steps,
        inv_tau_value,
        v_threshold,
        v_reset,
        INV_TAU_FROM_PTR: tl.constexpr,
        DECAY_INPUT: tl.constexpr,
        HARD_RESET: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        keep = offs < n_neurons
        # float scalars arrive as fp32 from an eager launch and as fp64 from torch.compile's generated code
        v_threshold = tl.cast(v_threshold, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        inv_tau = _inv_tau(inv_tau_ptr, inv_tau_value, INV_TAU_FROM_PTR)
        v = tl.zeros([BLOCK_SIZE], dtype=tl.float32) + v_reset
        idx = offs  # int64: (t * n_neurons + neuron), advanced by n_neurons per step
        for _t in range(n_steps):
            x = tl.load(x_ptr + idx, mask=keep, other=0.0).to(tl.float32)
            if DECAY_INPUT:
                h = v + inv_tau * (x - (v - v_reset))
            else:
                h = v - inv_tau * (v - v_reset) + x
            charge = h - v_threshold
            s = (charge >= 0.0).to(tl.float32)
            if HARD_RESET:
                v = h * (1.0 - s) + v_reset * s
            else:
                v = h - v_threshold * s
            tl.store(spikes_ptr + idx, s.to(spikes_ptr.dtype.element_ty), mask=keep)
            tl.store(charge_ptr + idx, charge.to(charge_ptr.dtype.element_ty), mask=keep)
            idx += n_neurons

    @triton.jit
    def _lif_backward_kernel(  # type: ignore[no-untyped-def]
        grad_spikes_ptr,
        charge_ptr,
        inv_tau_ptr,
        grad_x_ptr,
        grad_inv_tau_ptr,
        n_neurons,
        n_steps,
        last_step_offset,
        inv_tau_value,
        v_threshold,
        v_reset,
        surrogate_param,
        INV_TAU_FROM_PTR: tl.constexpr,
        DECAY_INPUT: tl.constexpr,
        HARD_RESET: tl.constexpr,
        DETACH_RESET: tl.constexpr,
        SURROGATE: tl.constexpr,
        NEED_INV_TAU_GRAD: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        keep = offs < n_neurons
        v_threshold = tl.cast(v_threshold, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        surrogate_param = tl.cast(surrogate_param, tl.float32)
        inv_tau = _inv_tau(inv_tau_ptr, inv_tau_value, INV_TAU_FROM_PTR)
        grad_v = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        grad_inv_tau = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        idx = offs + last_step_offset  # int64: (t * n_neurons + neuron), from t = T - 1 down
        for i in range(n_steps):
            t = n_steps - 1 - i
            charge = tl.load(charge_ptr + idx, mask=keep, other=-1.0).to(tl.float32)
            h = charge + v_threshold
            s = (charge >= 0.0).to(tl.float32)
            sg = _surrogate_grad(charge, surrogate_param, SURROGATE)
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
            grad_s = tl.load(grad_spikes_ptr + idx, mask=keep, other=0.0).to(tl.float32)
            grad_h = grad_s * sg + grad_v * dv_dh
            if DECAY_INPUT:
                grad_x = grad_h * inv_tau
            else:
                grad_x = grad_h
            tl.store(grad_x_ptr + idx, grad_x.to(grad_x_ptr.dtype.element_ty), mask=keep)
            if NEED_INV_TAU_GRAD:
                has_prev = t > 0
                # the mask from the index (idx >= n_neurons iff t > 0 on the kept lanes), not keep & has_prev: the
                # interpreter refuses a mask combined with a scalar boolean
                prev_mask = keep & (idx >= n_neurons)
                charge_prev = tl.load(charge_ptr + idx - n_neurons, mask=prev_mask, other=-1.0).to(tl.float32)
                s_prev = (charge_prev >= 0.0).to(tl.float32)
                h_prev = charge_prev + v_threshold
                if HARD_RESET:
                    v_prev = h_prev * (1.0 - s_prev) + v_reset * s_prev
                else:
                    v_prev = h_prev - v_threshold * s_prev
                v_prev = tl.where(has_prev, v_prev, v_reset)
                if DECAY_INPUT:
                    grad_inv_tau += grad_h * (h - v_prev) / inv_tau
                else:
                    grad_inv_tau -= grad_h * (v_prev - v_reset)
            grad_v = grad_h * (1.0 - inv_tau)
            idx -= n_neurons
        if NEED_INV_TAU_GRAD:
            tl.store(grad_inv_tau_ptr + pid, tl.sum(tl.where(keep, grad_inv_tau, 0.0), axis=0))


def _launcher(kernel: Any, traced: bool) -> Any:
    """``kernel`` itself for a direct launch, or wrapped by ``torch.library.wrap_triton`` when a compiler is tracing
    the call (fake or functional tensors), so that the launch is recorded in its graph."""
    return torch.library.wrap_triton(kernel) if traced else kernel


def _grid(n_neurons: int) -> tuple[int]:
    return (max(1, triton.cdiv(n_neurons, BLOCK)),)


def _inv_tau_args(inv_tau: torch.Tensor | float, placeholder: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """``(inv_tau_ptr, inv_tau_value, INV_TAU_FROM_PTR)`` of a kernel: a tensor is read by the kernel, a float passed
    by value (with any tensor as the unread pointer)."""
    if isinstance(inv_tau, torch.Tensor):
        return inv_tau, 0.0, True
    return placeholder, float(inv_tau), False


def lif_forward(
    x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters, traced: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes, charge)`` for ``x`` ``[T, N]`` (contiguous), both in ``x``'s dtype."""
    steps, neurons = x.shape
    spikes = torch.empty_like(x)
    charge = torch.empty_like(x)
    inv_tau_ptr, inv_tau_value, from_ptr = _inv_tau_args(inv_tau, x)
    _launcher(_lif_forward_kernel, traced)[_grid(neurons)](
        x,
        inv_tau_ptr,
        spikes,
        charge,
        neurons,
        steps,
        inv_tau_value,
        float(params.v_threshold),
        float(params.v_reset),
        INV_TAU_FROM_PTR=from_ptr,
        DECAY_INPUT=params.decay_input,
        HARD_RESET=params.hard_reset,
        BLOCK_SIZE=BLOCK,
        num_warps=NUM_WARPS,
    )
    return spikes, charge


def lif_backward(
    grad_spikes: torch.Tensor,
    charge: torch.Tensor,
    inv_tau: torch.Tensor | float,
    params: LIFParameters,
    need_inv_tau_grad: bool,
    traced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dX [T, N] in the charge's dtype, dL/d(1/tau) as a 0-d float32 tensor)``; inputs contiguous, the
    surrogate one of the library's. Without ``need_inv_tau_grad`` the second tensor is unset memory that the caller
    does not read (no extra kernel for a constant tau)."""
    code = surrogate_code(params.surrogate)
    if code is None:
        raise TypeError(f"the Triton kernels take only the library's surrogates, got {params.surrogate!r}")
    steps, neurons = charge.shape
    grad_x = torch.empty_like(charge)
    grid = _grid(neurons)
    # per-program partial sums of dL/d(1/tau) (every program writes its entry); a placeholder when it is not needed
    partial = torch.empty(grid[0] if need_inv_tau_grad else 1, device=charge.device, dtype=torch.float32)
    inv_tau_ptr, inv_tau_value, from_ptr = _inv_tau_args(inv_tau, charge)
    _launcher(_lif_backward_kernel, traced)[grid](
        grad_spikes,
        charge,
        inv_tau_ptr,
        grad_x,
        partial,
        neurons,
        steps,
        (steps - 1) * neurons,
        inv_tau_value,
        float(params.v_threshold),
        float(params.v_reset),
        code[1],
        INV_TAU_FROM_PTR=from_ptr,
        DECAY_INPUT=params.decay_input,
        HARD_RESET=params.hard_reset,
        DETACH_RESET=params.detach_reset,
        SURROGATE=code[0],
        NEED_INV_TAU_GRAD=need_inv_tau_grad,
        BLOCK_SIZE=BLOCK,
        num_warps=NUM_WARPS,
    )
    return grad_x, partial.sum() if need_inv_tau_grad else partial[0]
