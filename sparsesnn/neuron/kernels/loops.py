"""The LIF time loop as plain tensor functions on ``[T, N]`` storage views: the pure-torch kernels of the fused neuron.

These are what runs on the CPU (eagerly, or under ``torch.compile``, which turns the loop into one vectorised kernel)
and on any device without Triton; :mod:`sparsesnn.neuron.kernels.triton_kernels` holds the same loops as Triton
kernels for CUDA. The equations are in :mod:`sparsesnn.neuron.functional`; the settings arrive as one
:class:`~sparsesnn.neuron.kernels.params.LIFParameters`, ``1/tau`` beside them as ``inv_tau``. Both kernels keep the
membrane in float32 (float64 for float64 input), whatever the input dtype, and store their outputs in the input
dtype: in bf16 or fp16 no float32 copy of a whole tensor is made, only one time step at a time is upcast.

What is saved for backward is the *charge* ``U[t] = H[t] - v_threshold`` (the membrane before the reset, relative to
the threshold), in the input dtype. The spike is ``S[t] = U[t] >= 0``, taken on the float32 charge in the forward
pass; the backward pass recomputes it from the stored charge. The sign of the charge survives rounding to a narrower
dtype (only an underflow to zero could flip a negative charge below ~6e-8 in fp16), so the backward pass sees the
spikes the forward pass emitted, which storing ``H`` itself in bf16 would not guarantee near the threshold.

Layout: a time-major tensor whose time dimension is outermost and whose per-step slab is dense in any order (a
contiguous tensor, or a ``channels_last`` activation viewed as ``[T, B, C, H, W]``) is processed in its storage order
through :func:`storage_view`, and the outputs get the input's strides, so a channels-last network stays channels-last
without a copy.
"""

from __future__ import annotations

import torch

from sparsesnn.neuron.kernels.params import LIFParameters


def is_time_outer_dense(x: torch.Tensor) -> bool:
    """Whether ``x`` (``[T, ...]``) is non-overlapping and dense with the time dimension outermost in memory."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(x.shape[1:], x.stride()[1:], strict=True) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return x.shape[0] == 1 or x.stride(0) == expected


def storage_view(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``[T, N]`` in its storage order (a view when :func:`is_time_outer_dense`, else a contiguous copy).

    Pair it with :func:`like_input` to give a ``[T, N]`` result the shape and strides of ``x``.
    """
    steps = x.shape[0]
    if not is_time_outer_dense(x):
        x = x.contiguous()
    return x.as_strided((steps, x.numel() // max(steps, 1)), (x.numel() // max(steps, 1), 1), x.storage_offset())


def like_input(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A contiguous ``[T, N]`` result viewed with the shape and layout of ``x`` (see :func:`storage_view`)."""
    if not is_time_outer_dense(x):
        return flat.reshape(x.shape)
    return flat.as_strided(x.shape, x.stride())


def match_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of ``like`` (same shape), copying only when they differ: an upstream gradient laid out
    differently from the saved charge is put in the charge's storage order before the backward kernel reads both."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 input, float32 for everything narrower: the dtype the membrane is kept in."""
    return torch.promote_types(dtype, torch.float32)


def lif_forward_loop(
    x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward loop on ``x`` ``[T, N]``: returns ``(spikes, charge)``, both ``[T, N]`` in ``x``'s dtype."""
    acc = accumulator_dtype(x.dtype)
    inv_tau = inv_tau.to(acc) if isinstance(inv_tau, torch.Tensor) else inv_tau
    v_threshold, v_reset = params.v_threshold, params.v_reset
    v = torch.full_like(x[0], v_reset, dtype=acc)
    spikes = []
    charge = []
    for t in range(x.shape[0]):
        xt = x[t].to(acc)
        if params.decay_input:
            h = v + inv_tau * (xt - (v - v_reset))
        else:
            h = v - inv_tau * (v - v_reset) + xt
        charge_t = h - v_threshold
        s = (charge_t >= 0).to(acc)
        if params.hard_reset:
            v = h * (1.0 - s) + v_reset * s
        else:
            v = h - v_threshold * s
        spikes.append(s.to(x.dtype))
        charge.append(charge_t.to(x.dtype))
    return torch.stack(spikes), torch.stack(charge)


def lif_backward_loop(
    grad_spikes: torch.Tensor,
    charge: torch.Tensor,
    inv_tau: torch.Tensor | float,
    params: LIFParameters,
    need_inv_tau_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward loop: ``(dL/dX [T, N] in the charge's dtype, dL/d(1/tau) as a 0-d float32/64 tensor or None)`` given
    ``dL/dS`` and the saved charge. The recursion is the one in :mod:`sparsesnn.neuron.functional`'s docstring."""
    acc = accumulator_dtype(charge.dtype)
    inv_tau = inv_tau.to(acc) if isinstance(inv_tau, torch.Tensor) else inv_tau
    v_threshold, v_reset, surrogate = params.v_threshold, params.v_reset, params.surrogate
    grad_v = torch.zeros_like(charge[0], dtype=acc)
    grad_x = []
    grad_inv_tau_terms = torch.zeros_like(charge[0], dtype=acc) if need_inv_tau_grad else None
    for t in range(charge.shape[0] - 1, -1, -1):
        charge_t = charge[t].to(acc)
        h = charge_t + v_threshold
        s = (charge_t >= 0).to(acc)
        sg = surrogate.grad(charge_t)
        if params.hard_reset:
            dv_dh = (1.0 - s) if params.detach_reset else (1.0 - s) + (v_reset - h) * sg
        else:
            dv_dh = torch.ones_like(charge_t) if params.detach_reset else 1.0 - v_threshold * sg
        grad_h = grad_spikes[t].to(acc) * sg + grad_v * dv_dh
        grad_x.append((grad_h * inv_tau if params.decay_input else grad_h).to(charge.dtype))
        if grad_inv_tau_terms is not None:
            if t > 0:
                charge_prev = charge[t - 1].to(acc)
                s_prev = (charge_prev >= 0).to(acc)
                h_prev = charge_prev + v_threshold
                if params.hard_reset:
                    v_prev = h_prev * (1.0 - s_prev) + v_reset * s_prev
                else:
                    v_prev = h_prev - v_threshold * s_prev
            else:
                v_prev = torch.full_like(charge_t, v_reset)
            if params.decay_input:
                grad_inv_tau_terms = grad_inv_tau_terms + grad_h * (h - v_prev) / inv_tau
            else:
                grad_inv_tau_terms = grad_inv_tau_terms - grad_h * (v_prev - v_reset)
        grad_v = grad_h * (1.0 - inv_tau)
    grad_x.reverse()
    grad_inv_tau = grad_inv_tau_terms.sum() if grad_inv_tau_terms is not None else None
    return torch.stack(grad_x), grad_inv_tau
