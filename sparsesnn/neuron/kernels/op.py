"""The fused LIF as PyTorch operators: ``torch.ops.sparsesnn.lif_forward`` and ``lif_backward``, with autograd.

Why operators and not an ``autograd.Function`` around a compiled function: each call of a ``torch.compile``'d
function from Python pays for its guards and wrapper (~0.2 ms forward and ~0.8 ms backward of CPU time per layer on
the H200 host measured for issue 22, BENCHMARKS.md), so a 19-neuron ResNet19 step was bound by the host. An
operator has a schema, so

- in eager mode a call is one dispatch to the kernel of the tensor's device: on CUDA the Triton kernels of
  :mod:`sparsesnn.lif_triton`, launched directly; elsewhere the loops of :mod:`sparsesnn.lif_kernels`, under
  ``torch.compile`` on the CPU when a C++ compiler is present (``fused``) or plain;
- under a whole-model ``torch.compile`` the operators are defined with ``torch.library.triton_op`` when Triton is
  installed, so the compiler decomposes them into their implementation: on CUDA it calls the Triton kernels from its
  generated code (no Python in between, and CUDA graphs can capture them), on the CPU it fuses the plain loop with the
  surrounding graph. Without Triton they are ordinary custom operators with a fake (shape) implementation.

Forward returns ``(S, U)``: the spikes and the charge relative to threshold that backward needs, both in the input's
dtype and layout (see :mod:`sparsesnn.lif_kernels`). The surrogate travels as a small integer code and its one
parameter (:data:`SURROGATE_CODES`); a surrogate of the user's own goes through :class:`EagerLIF` only.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from typing import Any, Literal

import torch

from sparsesnn.neuron.kernels import triton_kernels
from sparsesnn.neuron.kernels.loops import (
    accumulator_dtype,
    lif_backward_loop,
    lif_forward_loop,
    like_input,
    match_layout,
    storage_view,
)
from sparsesnn.neuron.surrogates import ATan, Rectangular, Sigmoid, SuperSpike, Surrogate, Triangle

#: surrogate class -> (code in the kernels, name of its one parameter)
SURROGATE_CODES: dict[type, tuple[int, str]] = {
    ATan: (0, "alpha"),
    Sigmoid: (1, "alpha"),
    Rectangular: (2, "width"),
    SuperSpike: (3, "beta"),
    Triangle: (4, "gamma"),
}
_BY_CODE: dict[int, tuple[type, str]] = {code: (cls, param) for cls, (code, param) in SURROGATE_CODES.items()}


def surrogate_code(surrogate: Surrogate) -> tuple[int, float] | None:
    """``(code, parameter)`` of one of the library's surrogates; None for any other object."""
    entry = SURROGATE_CODES.get(type(surrogate))
    if entry is None:
        return None
    code, param = entry
    return code, float(getattr(surrogate, param))


@functools.lru_cache(maxsize=64)
def surrogate_from_code(code: int, param: float) -> Surrogate:
    """The surrogate object of ``(code, param)``; the same object for the same pair, so that the CPU kernels compiled
    with ``torch.compile`` (which guard on it) are reused."""
    cls, name = _BY_CODE[code]
    return cls(**{name: param})  # type: ignore[no-any-return]


def _is_traced(x: torch.Tensor) -> bool:
    """Whether ``x`` is a tracing stand-in (fake or functional tensor), i.e. a compiler is recording this call."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch._subclasses.functional_tensor import FunctionalTensor

    return isinstance(x, FakeTensor | FunctionalTensor) or torch.compiler.is_compiling()


def _cpu_kernels(fused: bool, x: torch.Tensor) -> tuple[Any, Any]:
    """The forward and backward loops to run: ``torch.compile``'d ones in eager mode when ``fused``, else the plain
    loops (also what a compiler tracing this call records, to fuse them with the rest of its graph)."""
    if fused and not _is_traced(x):
        from sparsesnn.neuron.kernels.op import compiled_kernels

        return compiled_kernels()
    return lif_forward_loop, lif_backward_loop


def _use_triton(x: torch.Tensor, fused: bool) -> bool:
    return fused and triton_kernels.AVAILABLE and x.device.type == "cuda"


def _k_tensor(k: torch.Tensor | None, k_value: float, like: torch.Tensor) -> torch.Tensor:
    """``1/tau`` as a 0-d tensor in the membrane's dtype: a tensor argument keeps the compiled CPU kernels from
    specialising (and recompiling) on every value of tau."""
    return k if k is not None else torch.tensor(k_value, dtype=accumulator_dtype(like.dtype), device=like.device)


def _forward(
    x: torch.Tensor,
    k: torch.Tensor | None,
    k_value: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    fused: bool,
    triton: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, U)`` in ``x``'s dtype and layout: the Triton kernel when ``triton`` is allowed and applies, else the
    torch loop (compiled or plain, see :func:`_cpu_kernels`)."""
    flat = storage_view(x)
    if triton and _use_triton(x, fused):
        spikes, charge = triton_kernels.lif_forward(
            flat, k, k_value, v_threshold, v_reset, decay_input, hard_reset, traced=_is_traced(x)
        )
    else:
        forward, _ = _cpu_kernels(fused, x)
        spikes, charge = forward(flat, _k_tensor(k, k_value, x), v_threshold, v_reset, decay_input, hard_reset)
    return like_input(spikes, x), like_input(charge, x)


def _backward(
    grad_spikes: torch.Tensor,
    charge: torch.Tensor,
    k: torch.Tensor | None,
    k_value: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    code: tuple[int, float] | None,
    need_k_grad: bool,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dX, dL/dk)``: the Triton kernel for a surrogate with a ``code`` when it applies, else the torch loop
    with the ``surrogate`` object (any object with ``grad``). dL/dk is unset memory unless ``need_k_grad``."""
    grad = storage_view(match_layout(grad_spikes, charge))
    flat = storage_view(charge)
    if code is not None and _use_triton(charge, fused):
        grad_x, grad_k = triton_kernels.lif_backward(
            grad,
            flat,
            k,
            k_value,
            v_threshold,
            v_reset,
            decay_input,
            hard_reset,
            detach_reset,
            code[0],
            code[1],
            need_k_grad,
            traced=_is_traced(charge),
        )
    else:
        _, backward = _cpu_kernels(fused, charge)
        grad_x, maybe_k = backward(
            grad,
            flat,
            _k_tensor(k, k_value, charge),
            v_threshold,
            v_reset,
            decay_input,
            hard_reset,
            detach_reset,
            surrogate,
            need_k_grad,
        )
        grad_k = maybe_k if maybe_k is not None else charge.new_empty((), dtype=torch.float32)  # unread
    return like_input(grad_x, charge), grad_k


def _forward_impl(
    x: torch.Tensor,
    k: torch.Tensor | None,
    k_value: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: int,
    surrogate_param: float,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparsesnn::lif_forward`` (the reset and surrogate settings are for the backward pass)."""
    return _forward(x, k, k_value, v_threshold, v_reset, decay_input, hard_reset, fused, triton=True)


def _backward_impl(
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
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparsesnn::lif_backward``."""
    code = (surrogate, surrogate_param)
    settings = (k_value, v_threshold, v_reset, decay_input, hard_reset, detach_reset)
    return _backward(grad_spikes, charge, k, *settings, surrogate_from_code(*code), code, need_k_grad, fused)


def _define(name: str, impl: Any) -> Any:
    """A ``sparsesnn::name`` operator running ``impl``: a ``triton_op`` (decomposed by ``torch.compile``) when Triton
    is installed, else a ``custom_op`` whose fake implementation is ``impl`` itself (it only allocates like its
    inputs when given fake tensors)."""
    if triton_kernels.AVAILABLE:
        return torch.library.triton_op(f"sparsesnn::{name}", impl, mutates_args=())
    op = torch.library.custom_op(f"sparsesnn::{name}", impl, mutates_args=())
    op.register_fake(impl)
    return op


lif_forward_op = _define("lif_forward", _forward_impl)
lif_backward_op = _define("lif_backward", _backward_impl)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    _x, k, *config, fused = inputs
    ctx.save_for_backward(output[1], k)
    ctx.config = tuple(config)
    ctx.fused = fused
    ctx.k_dtype = k.dtype if k is not None else None


def _op_backward(ctx: Any, grad_spikes: torch.Tensor, _grad_charge: torch.Tensor) -> tuple[Any, ...]:
    charge, k = ctx.saved_tensors
    need_k = k is not None and bool(ctx.needs_input_grad[1])
    grad_x, grad_k = lif_backward_op(grad_spikes, charge, k, *ctx.config, need_k, ctx.fused)
    k_grad = grad_k.to(ctx.k_dtype) if need_k else None
    return (grad_x, k_grad) + (None,) * (len(ctx.config) + 1)


lif_forward_op.register_autograd(_op_backward, setup_context=_setup_context)


class EagerLIF(torch.autograd.Function):
    """The implementations behind a plain ``autograd.Function``: what an eager call runs. It skips the
    custom-operator dispatch (Python on every call: about 0.5 ms of host time per layer and direction on the H200 host
    of BENCHMARKS.md), which only a compiler needs; the kernels and numbers are the operators'. It also serves a
    surrogate of the user's own (any object with ``grad``; ``code`` None), which the operators cannot carry: its
    backward pass runs the torch loop on every device.

    ``apply(x, k, k_value, v_threshold, v_reset, decay_input, hard_reset, detach_reset, surrogate, code, fused)``
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        k: torch.Tensor | None,
        k_value: float,
        v_threshold: float,
        v_reset: float,
        decay_input: bool,
        hard_reset: bool,
        detach_reset: bool,
        surrogate: Surrogate,
        code: tuple[int, float] | None,
        fused: bool,
    ) -> torch.Tensor:
        k_in = k.detach() if k is not None else None
        settings = (k_value, v_threshold, v_reset, decay_input, hard_reset)
        spikes, charge = _forward(x.detach(), k_in, *settings, fused, triton=code is not None)
        ctx.save_for_backward(charge, k)
        ctx.config = (*settings, detach_reset, surrogate, code)
        ctx.fused = fused
        return spikes

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        charge, k = ctx.saved_tensors
        need_k = k is not None and bool(ctx.needs_input_grad[1])
        grad_x, grad_k = _backward(grad_spikes, charge, k, *ctx.config, need_k, ctx.fused)
        return (grad_x, grad_k.to(k.dtype) if need_k else None) + (None,) * 9


def lif_fused(
    x: torch.Tensor,
    k: torch.Tensor | float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    fused: bool,
) -> torch.Tensor:
    """Spikes of the LIF over ``x`` ``[T, ...]`` (``k`` = 1/tau, a float or a 0-d tensor): through the operators when
    a compiler traces the call and the surrogate is one of the library's, else through :class:`EagerLIF` (the same
    implementations, less host time)."""
    k_tensor = k if isinstance(k, torch.Tensor) else None
    k_value = 0.0 if isinstance(k, torch.Tensor) else float(k)
    settings = (k_value, float(v_threshold), float(v_reset), decay_input, hard_reset, detach_reset)
    code = surrogate_code(surrogate)
    if code is not None and torch.compiler.is_compiling():
        spikes, _ = lif_forward_op(x, k_tensor, *settings, *code, fused)
        return spikes  # type: ignore[no-any-return]
    return EagerLIF.apply(x, k_tensor, *settings, surrogate, code, fused)  # type: ignore[no-any-return]


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
        return triton_kernels.AVAILABLE
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
