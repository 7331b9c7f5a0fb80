"""Leaky integrate-and-fire neurons on time-major input, with the time loop fused into one operator.

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

Only ``U = H - v_threshold`` is saved for backward (one tensor the size of the input, in its dtype): ``S`` and
``V[t-1]`` are recomputed from it and ``X[t] - V[t-1] + v_reset = (H[t] - V[t-1]) / k``. The loops live in
:mod:`sparsesnn.lif_kernels` (plain tensor code: eager, or under ``torch.compile`` on the CPU) and
:mod:`sparsesnn.lif_triton` (Triton kernels for CUDA), behind the operators of :mod:`sparsesnn.lif_op`, which a
whole-model ``torch.compile`` inlines. Every kernel keeps the membrane in float32 and stores spikes and ``U`` in the
input's dtype and layout (bf16 / fp16 under autocast, channels-last activations). They give the same numbers up to
float rounding; the tests check them against a reference that lets autograd run through a Python loop
(:func:`lif_reference`).

A neuron holds no state between calls: each call starts from ``V[-1] = v_reset``, so nothing needs resetting between
batches.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
from torch import nn

from sparsesnn import lif_triton
from sparsesnn.lif_kernels import lif_backward_loop, lif_forward_loop
from sparsesnn.lif_op import lif_fused
from sparsesnn.surrogates import ATan, Surrogate

if TYPE_CHECKING:
    from sparsesnn.neuron_kinds import NeuronSpec

Backend = Literal["auto", "compiled", "eager"]
BACKENDS: tuple[str, ...] = ("auto", "compiled", "eager")


# ----------------------------------------------------------------------------------------------------------------------
# dispatch: the operators of sparsesnn.lif_op, or an autograd.Function for a surrogate of the user's own
# ----------------------------------------------------------------------------------------------------------------------
@functools.cache
def _cxx_on_path(cxx: str) -> bool:
    """Whether a C++ compiler (``$CXX`` or a usual name) is on the PATH; looked up once per process (a stat per
    candidate and call would cost more than a small layer's kernel)."""
    return any(shutil.which(c) for c in (cxx, "g++", "c++", "clang++") if c)


def _compiler_available(device: torch.device) -> bool:
    """Whether a fused kernel can be built for ``device`` here: a C++ compiler for ``torch.compile`` on the CPU,
    Triton on CUDA. ``SPARSESNN_NO_COMPILE=1`` forces the plain loops everywhere, ``=cpu`` (or ``=cuda``) on that
    device type only (a GPU machine whose C++ compiler is slow)."""
    flag = os.environ.get("SPARSESNN_NO_COMPILE", "")
    if (flag not in ("", "0") and flag not in ("cpu", "cuda")) or flag == device.type:
        return False
    if device.type == "cpu":
        return _cxx_on_path(os.environ.get("CXX", ""))
    if device.type == "cuda":
        return lif_triton.AVAILABLE
    return False


# torch.compile keeps its own code cache keyed on these function objects; wrapping them once here (rather than per
# neuron instance) lets every layer with the same (dtype, T, flags) share one compiled kernel.
#: kernels compiled per function: one per (dtype, T, flags, surrogate, static or dynamic N); a process that trains
#: several models in fp32 and bf16 (a benchmark, the tests) needs more than Dynamo's default of 8
KERNEL_RECOMPILE_LIMIT = 64


def _compile_kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under ``torch.compile``, its float arguments (``v_threshold``, ``v_reset``) specialised: one kernel per
    value. With Dynamo's default (a float that changes becomes a symbolic input), a kernel compiled after ``v_reset``
    changed from 0.0 to -0.25 was then reused for 0.0 and gave wrong spikes (torch 2.13: calls with
    ``(N, v_reset)`` = (64, 0.0), (32, 0.0), (64, -0.25), (64, 0.0); the last differed from the plain loop)."""
    compiled = torch.compile(fn, dynamic=None, fullgraph=True)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        with torch._dynamo.config.patch(recompile_limit=KERNEL_RECOMPILE_LIMIT, specialize_float=True):
            return compiled(*args)

    return call


_compiled_forward: Callable[..., Any] = _compile_kernel(lif_forward_loop)
_compiled_backward: Callable[..., Any] = _compile_kernel(lif_backward_loop)


def compiled_kernels() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The ``torch.compile``'d forward and backward loops of :mod:`sparsesnn.lif_kernels` (CPU, eager calls)."""
    return _compiled_forward, _compiled_backward


def _use_compiled(backend: str, device: torch.device) -> bool:
    if backend == "eager":
        return False
    if backend == "compiled":
        return True
    return _compiler_available(device)


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

    ``inv_tau`` is ``1/tau``; pass a tensor that requires grad to learn it (PLIF). See the module docstring for the
    equations. ``backend`` picks the kernel: "compiled" (Triton on CUDA, ``torch.compile`` on the CPU), "eager" (the
    plain tensor loop, on any device) or "auto" (compiled when the compiler is available). Any float dtype works:
    the membrane is kept in float32 and the spikes are returned in ``x``'s dtype (bf16 / fp16 under autocast).
    """
    if x.dim() < 2:
        raise ValueError(f"LIF input must be time-major [T, B, ...] with at least 2 dims, got shape {tuple(x.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not x.is_floating_point():
        raise TypeError(f"LIF input must be a floating-point tensor, got {x.dtype}")
    sg = surrogate if surrogate is not None else ATan()
    # inside a compiled region the availability checks are not traced: the operators choose per device themselves
    fused = backend != "eager" if torch.compiler.is_compiling() else _use_compiled(backend, x.device)
    return lif_fused(x, inv_tau, v_threshold, v_reset, decay_input, hard_reset, detach_reset, sg, fused)


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


def heaviside(u: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """``1[u >= 0]`` forward, ``surrogate.grad(u)`` backward: the spike of a user's own neuron (one time step)."""
    return _SurrogateSpike.apply(u, surrogate)  # type: ignore[no-any-return]


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

    @classmethod
    def from_spec(cls, spec: NeuronSpec, settings: object = None) -> LIF:
        """One neuron of a model's :class:`~sparsesnn.neuron_kinds.NeuronSpec` (the ``lif`` / ``plif`` kinds)."""
        return cls(
            spec.tau, spec.v_threshold, spec.v_reset, spec.decay_input, spec.detach_reset, spec.surrogate, spec.backend
        )

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


#: the attribute that declares a module spiking (True) or not (False), on its class or on one instance; it wins over
#: every other rule of :func:`is_spiking`
SPIKING_ATTRIBUTE = "sparsesnn_spiking"

M = TypeVar("M", bound=type)


def spiking_neuron(cls: M) -> M:
    """Class decorator: declare a user's neuron class spiking, so that metrics (firing rates, SOPs of the layer
    it drives), NIR export checks and compaction see it. Its output (or the first element of a tuple output) must
    be its spikes. The same as setting the class attribute ``sparsesnn_spiking = True``::

        @sparsesnn.spiking_neuron
        class MyNeuron(nn.Module):
            def forward(self, x): ...
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"spiking_neuron decorates an nn.Module subclass, got {cls!r}")
    setattr(cls, SPIKING_ATTRIBUTE, True)
    return cls


def mark_spiking(module: nn.Module, spiking: bool = True) -> nn.Module:
    """Declare one module instance spiking (or, with ``spiking=False``, not), e.g. a third-party neuron whose class
    you would rather not change; returns the module."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"mark_spiking takes an nn.Module, got {type(module).__name__}")
    setattr(module, SPIKING_ATTRIBUTE, bool(spiking))
    return module


def is_spiking(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron.

    In order: a declaration (``sparsesnn_spiking`` on the instance or its class: :func:`spiking_neuron`,
    :func:`mark_spiking`); our :class:`LIF` family; a peer library's neuron (SpikingJelly, snnTorch, Norse), matched by
    base-class name so that none of them has to be installed.
    """
    declared = getattr(module, SPIKING_ATTRIBUTE, None)
    if declared is not None:
        return bool(declared)
    if isinstance(module, LIF):
        return True
    return any(
        cls.__name__ in FOREIGN_NEURON_BASES and not cls.__module__.startswith("sparsesnn")
        for cls in type(module).__mro__
    )
