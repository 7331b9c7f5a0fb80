"""Leaky integrate-and-fire neurons on time-major input, with the time loop fused into one autograd op.

Dynamics (SpikingJelly's convention, Fang et al. ICCV 2021, eq. 1-4), for ``t = 0 .. T-1`` with ``V[-1] = v_reset``
and ``k = 1/tau``::

    charge     H[t] = V[t-1] + k * (X[t] - (V[t-1] - v_reset))       (decay_input=True)
               H[t] = V[t-1] - k * (V[t-1] - v_reset) + X[t]         (decay_input=False)
    fire       S[t] = Heaviside(H[t] - v_threshold)
    reset      V[t] = H[t] * (1 - S[t]) + v_reset * S[t]             (hard reset)
               V[t] = H[t] - v_threshold * S[t]                      (soft reset)

The backward pass replaces ``dS/dH`` by a surrogate ``sigma'(H - v_threshold)`` and runs the recursion by hand::

    dL/dH[t]    = dL/dS[t] * sigma'[t] + dL/dV[t] * dV[t]/dH[t]
    dV/dH       = (1 - S) + (v_reset - H) * sigma'      (hard; the second term is dropped with detach_reset)
                  1 - v_threshold * sigma'               (soft; the second term is dropped with detach_reset)
    dL/dV[t-1]  = dL/dH[t] * (1 - k)
    dL/dX[t]    = dL/dH[t] * k   (decay_input)   or   dL/dH[t]
    dL/dk       = sum_t dL/dH[t] * (X[t] - V[t-1] + v_reset)   or   - sum_t dL/dH[t] * (V[t-1] - v_reset)

Only ``H`` is saved for backward (one tensor the size of the input): ``S`` and ``V[t-1]`` are recomputed from it and
``X[t] - V[t-1] + v_reset = (H[t] - V[t-1]) / k``. The forward and backward loops are plain tensor functions; when a
compiler is available they run under ``torch.compile`` (one vectorised kernel over all neurons that keeps ``V`` in
registers across time steps), otherwise eagerly. Both give the same numbers; the tests check them against a
reference that lets autograd run through a Python loop (:func:`lif_reference`).

A neuron holds no state between calls: each call starts from ``V[-1] = v_reset``, so nothing needs resetting between
batches.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from sparsesnn.surrogates import ATan, Surrogate

Backend = Literal["auto", "compiled", "eager"]
BACKENDS: tuple[str, ...] = ("auto", "compiled", "eager")


# ----------------------------------------------------------------------------------------------------------------------
# pure kernels on [T, N] tensors
# ----------------------------------------------------------------------------------------------------------------------
def _lif_forward_kernel(
    x: torch.Tensor, k: torch.Tensor, v_threshold: float, v_reset: float, decay_input: bool, hard_reset: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward loop: returns ``(spikes, H)``, both ``[T, N]``."""
    v = torch.full_like(x[0], v_reset)
    spikes = []
    charges = []
    for t in range(x.shape[0]):
        if decay_input:
            h = v + k * (x[t] - (v - v_reset))
        else:
            h = v - k * (v - v_reset) + x[t]
        s = (h >= v_threshold).to(x.dtype)
        if hard_reset:
            v = h * (1.0 - s) + v_reset * s
        else:
            v = h - v_threshold * s
        spikes.append(s)
        charges.append(h)
    return torch.stack(spikes), torch.stack(charges)


def _lif_backward_kernel(
    grad_spikes: torch.Tensor,
    h_seq: torch.Tensor,
    k: torch.Tensor,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    need_k_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward loop: returns ``(dL/dX, dL/dk or None)`` given ``dL/dS`` and the saved charges ``H``."""
    n_steps = h_seq.shape[0]
    grad_v = torch.zeros_like(h_seq[0])
    grad_x = []
    grad_k_terms = torch.zeros_like(h_seq[0]) if need_k_grad else None
    for t in range(n_steps - 1, -1, -1):
        h = h_seq[t]
        u = h - v_threshold
        s = (u >= 0).to(h.dtype)
        sg = surrogate.grad(u)
        if hard_reset:
            dv_dh = (1.0 - s) if detach_reset else (1.0 - s) + (v_reset - h) * sg
        else:
            dv_dh = torch.ones_like(h) if detach_reset else 1.0 - v_threshold * sg
        grad_h = grad_spikes[t] * sg + grad_v * dv_dh
        grad_x.append(grad_h * k if decay_input else grad_h)
        if grad_k_terms is not None:
            if t > 0:
                hp = h_seq[t - 1]
                sp = (hp >= v_threshold).to(h.dtype)
                v_prev = hp * (1.0 - sp) + v_reset * sp if hard_reset else hp - v_threshold * sp
            else:
                v_prev = torch.full_like(h, v_reset)
            if decay_input:
                grad_k_terms = grad_k_terms + grad_h * (h - v_prev) / k
            else:
                grad_k_terms = grad_k_terms - grad_h * (v_prev - v_reset)
        grad_v = grad_h * (1.0 - k)
    grad_x.reverse()
    grad_k = grad_k_terms.sum() if grad_k_terms is not None else None
    return torch.stack(grad_x), grad_k


def _compiler_available(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels for ``device`` here (a C++ compiler on CPU, Triton on CUDA)."""
    if os.environ.get("SPARSESNN_NO_COMPILE", "") not in ("", "0"):
        return False
    if device.type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


# torch.compile keeps its own code cache keyed on these function objects; wrapping them once here (rather than per
# neuron instance) lets every layer with the same (dtype, T, flags) share one compiled kernel.
_compiled_forward: Callable[..., Any] = torch.compile(_lif_forward_kernel, dynamic=None, fullgraph=True)
_compiled_backward: Callable[..., Any] = torch.compile(_lif_backward_kernel, dynamic=None, fullgraph=True)


def _use_compiled(backend: str, device: torch.device) -> bool:
    if backend == "eager":
        return False
    if backend == "compiled":
        return True
    return _compiler_available(device)


class _LIFFunction(torch.autograd.Function):
    """The fused LIF time loop: forward saves only ``H``; backward is the hand-written recursion above."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        k: torch.Tensor,
        v_threshold: float,
        v_reset: float,
        decay_input: bool,
        hard_reset: bool,
        detach_reset: bool,
        surrogate: Surrogate,
        compiled: bool,
    ) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).detach()
        k_val = k.detach().to(dtype=x.dtype)
        fwd = _compiled_forward if compiled else _lif_forward_kernel
        spikes, h_seq = fwd(flat, k_val, v_threshold, v_reset, decay_input, hard_reset)
        ctx.save_for_backward(h_seq, k_val)
        ctx.config = (v_threshold, v_reset, decay_input, hard_reset, detach_reset, surrogate, compiled)
        ctx.in_shape = x.shape
        ctx.k_dtype = k.dtype
        return spikes.reshape(x.shape)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        h_seq, k_val = ctx.saved_tensors
        v_threshold, v_reset, decay_input, hard_reset, detach_reset, surrogate, compiled = ctx.config
        need_k = bool(ctx.needs_input_grad[1])
        bwd = _compiled_backward if compiled else _lif_backward_kernel
        # detach() drops the view relation, so the compiled kernel does not guard on the layout of its base
        grad_flat = grad_out.contiguous().reshape(h_seq.shape).detach()
        grad_x, grad_k = bwd(
            grad_flat, h_seq, k_val, v_threshold, v_reset, decay_input, hard_reset, detach_reset, surrogate, need_k
        )
        grad_k_out = grad_k.to(ctx.k_dtype) if grad_k is not None else None
        return grad_x.reshape(ctx.in_shape), grad_k_out, None, None, None, None, None, None, None


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
    """Run LIF dynamics over ``x`` of shape ``[T, ...]`` and return spikes of the same shape and dtype.

    ``inv_tau`` is ``1/tau``; pass a tensor that requires grad to learn it (PLIF). See the module docstring for the
    equations. ``backend`` picks the compiled or the eager kernel ("auto": compiled when a compiler is available).
    """
    if x.dim() < 2:
        raise ValueError(f"LIF input must be time-major [T, B, ...] with at least 2 dims, got shape {tuple(x.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    sg = surrogate if surrogate is not None else ATan()
    k = inv_tau if isinstance(inv_tau, torch.Tensor) else torch.tensor(float(inv_tau), device=x.device)
    compiled = _use_compiled(backend, x.device) and not torch.compiler.is_compiling()
    return _LIFFunction.apply(
        x.contiguous(), k, float(v_threshold), float(v_reset), decay_input, hard_reset, detach_reset, sg, compiled
    )


def lif_reference(
    x: torch.Tensor,
    inv_tau: torch.Tensor | float,
    *,
    v_threshold: float = 1.0,
    v_reset: float = 0.0,
    decay_input: bool = True,
    hard_reset: bool = True,
    detach_reset: bool = False,
    surrogate: Surrogate | None = None,
) -> torch.Tensor:
    """The same dynamics with autograd running through a Python loop over time; the ground truth for tests."""
    sg = surrogate if surrogate is not None else ATan()
    heaviside = _SurrogateSpike.apply
    v = torch.full_like(x[0], v_reset)
    out = []
    for t in range(x.shape[0]):
        if decay_input:
            h = v + inv_tau * (x[t] - (v - v_reset))
        else:
            h = v - inv_tau * (v - v_reset) + x[t]
        s = heaviside(h - v_threshold, sg)
        s_reset = s.detach() if detach_reset else s
        if hard_reset:
            v = h * (1.0 - s_reset) + v_reset * s_reset
        else:
            v = h - v_threshold * s_reset
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


# ----------------------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------------------
def _check_neuron_args(tau: float, v_threshold: float, v_reset: float | None) -> None:
    if not (math.isfinite(tau) and tau > 1.0):
        raise ValueError(f"tau must be a finite number > 1 (so that 0 < 1/tau < 1), got {tau!r}")
    if not math.isfinite(v_threshold):
        raise ValueError(f"v_threshold must be finite, got {v_threshold!r}")
    if v_reset is not None and not (math.isfinite(v_reset) and v_reset < v_threshold):
        raise ValueError(f"v_reset must be finite and below v_threshold={v_threshold}, got {v_reset!r}")


class LIF(nn.Module):
    """Leaky integrate-and-fire neuron on ``[T, B, ...]`` input (see the module docstring for the equations).

    Args:
        tau: membrane time constant (> 1).
        v_threshold: firing threshold.
        v_reset: reset potential for a hard reset; ``None`` selects the soft reset (subtract ``v_threshold``), with
            the membrane decaying towards 0.
        decay_input: whether the input is scaled by ``1/tau`` as well.
        detach_reset: cut the reset path out of the gradient.
        surrogate: surrogate gradient, e.g. ``ATan(alpha=2.0)``.
        backend: "auto" (compiled kernel when a compiler is present), "compiled" or "eager".

    >>> import torch
    >>> LIF(tau=2.0)(torch.full((3, 1), 1.5)).flatten().tolist()
    [0.0, 1.0, 0.0]
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        _check_neuron_args(tau, v_threshold, v_reset)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.v_threshold = float(v_threshold)
        self.v_reset = v_reset
        self.decay_input = decay_input
        self.detach_reset = detach_reset
        self.surrogate: Surrogate = surrogate if surrogate is not None else ATan()
        self.backend: Backend = backend
        self.tau = float(tau)

    def inv_tau(self) -> torch.Tensor | float:
        return 1.0 / self.tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lif_multistep(
            x,
            self.inv_tau(),
            v_threshold=self.v_threshold,
            v_reset=0.0 if self.v_reset is None else self.v_reset,
            decay_input=self.decay_input,
            hard_reset=self.v_reset is not None,
            detach_reset=self.detach_reset,
            surrogate=self.surrogate,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"decay_input={self.decay_input}, detach_reset={self.detach_reset}, surrogate={self.surrogate}"
        )


class PLIF(LIF):
    """Parametric LIF (Fang et al., ICCV 2021): ``1/tau = sigmoid(w)`` with ``w`` learnable, one per layer.

    ``w`` starts at ``-log(init_tau - 1)`` so that ``1/tau = 1/init_tau``.
    """

    def __init__(
        self,
        init_tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(init_tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, backend)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    def inv_tau(self) -> torch.Tensor:
        return torch.sigmoid(self.w)

    def extra_repr(self) -> str:
        return (
            f"tau={1.0 / float(torch.sigmoid(self.w.detach())):.4f} (learnable), "
            + super().extra_repr().split(", ", 1)[1]
        )


#: base classes of the spiking neurons of peer libraries (SpikingJelly, snnTorch, Norse), recognised by name so
#: that none of them has to be installed
FOREIGN_NEURON_BASES = frozenset({"BaseNode", "SpikingNeuron", "LIFBoxCell", "LIFCell", "LIF"})


def is_spiking(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron: ours, or one of a peer library's (matched by base-class name)."""
    if isinstance(module, LIF):
        return True
    return any(
        cls.__name__ in FOREIGN_NEURON_BASES and not cls.__module__.startswith("sparsesnn")
        for cls in type(module).__mro__
    )
