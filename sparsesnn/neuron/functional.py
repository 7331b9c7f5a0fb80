"""The LIF dynamics as functions on time-major input, with the time loop fused into one operator.

Dynamics (SpikingJelly's convention, Fang et al. ICCV 2021, eq. 1-4), for ``t = 0 .. T-1`` with ``V[-1] = v_reset``
and ``inv_tau = 1/tau``::

    charge     H[t] = V[t-1] + inv_tau * (X[t] - (V[t-1] - v_reset))       (decay_input=True)
               H[t] = V[t-1] - inv_tau * (V[t-1] - v_reset) + X[t]         (decay_input=False)
    fire       S[t] = Heaviside(H[t] - v_threshold)
    reset      V[t] = H[t] * (1 - S[t]) + v_reset * S[t]                   (hard reset)
               V[t] = H[t] - v_threshold * S[t]                            (soft reset)

The backward pass replaces ``dS/dH`` by a surrogate ``sigma'(H - v_threshold)`` and runs the recursion by hand::

    dL/dH[t]         = dL/dS[t] * sigma'[t] + dL/dV[t] * dV[t]/dH[t]
    dV/dH            = (1 - S) + (v_reset - H) * sigma'   (hard; the second term is dropped with detach_reset)
                       1 - v_threshold * sigma'            (soft; the second term is dropped with detach_reset)
    dL/dV[t-1]       = dL/dH[t] * (1 - inv_tau)
    dL/dX[t]         = dL/dH[t] * inv_tau   (decay_input)   or   dL/dH[t]
    dL/d(inv_tau)    = sum_t dL/dH[t] * (X[t] - V[t-1] + v_reset)   or   - sum_t dL/dH[t] * (V[t-1] - v_reset)

Only the charge ``U = H - v_threshold`` is saved for backward (one tensor the size of the input, in its dtype): ``S``
and ``V[t-1]`` are recomputed from it and ``X[t] - V[t-1] + v_reset = (H[t] - V[t-1]) / inv_tau``. The settings
travel from the module to the kernels as one :class:`~sparsesnn.neuron.kernels.params.LIFParameters`. The loops live
in :mod:`sparsesnn.neuron.kernels.loops` (plain tensor code: eager, or under ``torch.compile`` on the CPU) and
:mod:`sparsesnn.neuron.kernels.triton_kernels` (Triton kernels for CUDA), behind the operators of
:mod:`sparsesnn.neuron.kernels.op`, which a whole-model ``torch.compile`` inlines. Every kernel keeps the membrane in
float32 and stores spikes and the charge in the input's dtype and layout (bf16 / fp16 under autocast, channels-last
activations). They give the same numbers up to float rounding; the tests check them against a reference that lets
autograd run through a Python loop (:func:`lif_reference`).

A neuron holds no state between calls: each call starts from ``V[-1] = v_reset``, so nothing needs resetting between
batches.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsesnn.neuron.kernels.op import BACKENDS, Backend, _use_compiled, lif_fused
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.surrogates import ATan, Surrogate


def lif_multistep(
    x: torch.Tensor,
    inv_tau: torch.Tensor | float,
    *,
    v_threshold: float = 1.0,
    v_reset: float = 0.0,
    decay_input: bool = True,
    hard_reset: bool = True,
    detach_reset: bool = False,
    surrogate: Surrogate | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Run LIF dynamics over ``x`` of shape ``[T, ...]`` and return spikes of the same shape, dtype and layout.

    ``inv_tau`` is ``1/tau``; pass a tensor that requires grad to learn it (PLIF). The other settings are those of
    :class:`~sparsesnn.neuron.kernels.params.LIFParameters` (the surrogate defaults to ``ATan()``); see the module
    docstring for the equations and :func:`lif_run` for ``backend``.
    """
    sg = surrogate if surrogate is not None else ATan()
    params = LIFParameters(
        v_threshold=float(v_threshold),
        v_reset=float(v_reset),
        hard_reset=bool(hard_reset),
        decay_input=bool(decay_input),
        detach_reset=bool(detach_reset),
        surrogate=sg,
    )
    return lif_run(x, inv_tau, params, backend)


def lif_run(
    x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters, backend: Backend = "auto"
) -> torch.Tensor:
    """:func:`lif_multistep` with the settings as one :class:`~sparsesnn.neuron.kernels.params.LIFParameters`.

    ``backend`` picks the kernel: "compiled" (Triton on CUDA, ``torch.compile`` on the CPU), "eager" (the plain tensor
    loop, on any device) or "auto" (compiled when the compiler is available). Any float dtype works: the membrane is
    kept in float32 and the spikes are returned in ``x``'s dtype (bf16 / fp16 under autocast).
    """
    if x.dim() < 2:
        raise ValueError(f"LIF input must be time-major [T, B, ...] with at least 2 dims, got shape {tuple(x.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not x.is_floating_point():
        raise TypeError(f"LIF input must be a floating-point tensor, got {x.dtype}")
    # inside a compiled region the availability checks are not traced: the operators choose per device themselves
    fused = backend != "eager" if torch.compiler.is_compiling() else _use_compiled(backend, x.device)
    return lif_fused(x, inv_tau, params, fused)


def lif_reference(x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters | None = None) -> torch.Tensor:
    """The same dynamics with autograd running through a Python loop over time; the ground truth for tests."""
    p = params if params is not None else LIFParameters()
    heaviside = _SurrogateSpike.apply
    v = torch.full_like(x[0], p.v_reset)
    out = []
    for t in range(x.shape[0]):
        if p.decay_input:
            h = v + inv_tau * (x[t] - (v - p.v_reset))
        else:
            h = v - inv_tau * (v - p.v_reset) + x[t]
        s = heaviside(h - p.v_threshold, p.surrogate)
        s_reset = s.detach() if p.detach_reset else s
        if p.hard_reset:
            v = h * (1.0 - s_reset) + p.v_reset * s_reset
        else:
            v = h - p.v_threshold * s_reset
        out.append(s)
    return torch.stack(out)


class _SurrogateSpike(torch.autograd.Function):
    """Single-step Heaviside with a surrogate gradient (used by the reference loop)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.surrogate = surrogate
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * ctx.surrogate.grad(u), None


def heaviside(u: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """``1[u >= 0]`` forward, ``surrogate.grad(u)`` backward: the spike of a user's own neuron (one time step)."""
    return _SurrogateSpike.apply(u, surrogate)  # type: ignore[no-any-return]
