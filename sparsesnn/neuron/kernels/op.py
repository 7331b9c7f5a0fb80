"""The fused LIF as PyTorch operators: ``torch.ops.sparsesnn.lif_forward`` and ``lif_backward``, with autograd.

Operators and not an ``autograd.Function`` around a compiled function, because each call of a ``torch.compile``'d
function from Python pays for its guards and wrapper, while an operator has a schema, so

- in eager mode a call is one dispatch to the kernel of the tensor's device: on CUDA the Triton kernels of
  :mod:`sparsesnn.neuron.kernels.triton_kernels`, launched directly; elsewhere the loops of
  :mod:`sparsesnn.neuron.kernels.loops`, under ``torch.compile`` on the CPU when a C++ compiler is present (``fused``)
  or plain;
- under a whole-model ``torch.compile`` the operators are defined with ``torch.library.triton_op`` when Triton is
  installed, so the compiler decomposes them into their implementation: on CUDA it calls the Triton kernels from its
  generated code (no Python in between, and CUDA graphs can capture them), on the CPU it fuses the plain loop with the
  surrounding graph. Without Triton they are ordinary custom operators with a fake (shape) implementation.

Forward returns ``(spikes, charge)``: the spikes and the charge relative to threshold that backward needs, both in the
input's dtype and layout (see :mod:`sparsesnn.neuron.kernels.loops`). The settings travel as one
:class:`~sparsesnn.neuron.kernels.params.LIFParameters` and ``1/tau`` beside them as ``inv_tau`` (a float, or a 0-d
tensor that may require grad); the operators' schema takes them flat (:data:`FLAT_FIELDS`, the surrogate as a small
integer code and its one parameter), so a surrogate of the user's own goes through :class:`EagerLIF` only.
"""

from __future__ import annotations

import functools
import inspect
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
from sparsesnn.neuron.kernels.params import (
    FLAT_FIELDS,
    SURROGATE_CODES,
    LIFParameters,
    surrogate_code,
    surrogate_from_code,
)

__all__ = ["SURROGATE_CODES", "EagerLIF", "LIFParameters", "lif_fused", "surrogate_code", "surrogate_from_code"]


def _is_traced(x: torch.Tensor) -> bool:
    """Whether ``x`` is a tracing stand-in (fake or functional tensor), i.e. a compiler is recording this call."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch._subclasses.functional_tensor import FunctionalTensor

    return isinstance(x, FakeTensor | FunctionalTensor) or torch.compiler.is_compiling()


def _cpu_kernels(fused: bool, x: torch.Tensor) -> tuple[Any, Any]:
    """The forward and backward loops to run: ``torch.compile``'d ones in eager mode when ``fused``, else the plain
    loops (also what a compiler tracing this call records, to fuse them with the rest of its graph)."""
    if fused and not _is_traced(x):
        return compiled_kernels()
    return lif_forward_loop, lif_backward_loop


def _use_triton(x: torch.Tensor, fused: bool, params: LIFParameters) -> bool:
    """Whether the Triton kernels serve this call: CUDA, the compiled backend, and one of the library's surrogates."""
    return (
        fused and triton_kernels.AVAILABLE and x.device.type == "cuda" and surrogate_code(params.surrogate) is not None
    )


def _inv_tau_tensor(inv_tau: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """``1/tau`` as a 0-d tensor in the membrane's dtype: a tensor argument keeps the compiled CPU kernels from
    specialising (and recompiling) on every value of tau."""
    if isinstance(inv_tau, torch.Tensor):
        return inv_tau
    return torch.tensor(inv_tau, dtype=accumulator_dtype(like.dtype), device=like.device)


def _forward(
    x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters, fused: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes, charge)`` in ``x``'s dtype and layout: the Triton kernel where it applies (:func:`_use_triton`),
    else the torch loop (compiled or plain, see :func:`_cpu_kernels`)."""
    flat = storage_view(x)
    if _use_triton(x, fused, params):
        spikes, charge = triton_kernels.lif_forward(flat, inv_tau, params, traced=_is_traced(x))
    else:
        forward, _ = _cpu_kernels(fused, x)
        spikes, charge = forward(flat, _inv_tau_tensor(inv_tau, x), params)
    return like_input(spikes, x), like_input(charge, x)


def _backward(
    grad_spikes: torch.Tensor,
    charge: torch.Tensor,
    inv_tau: torch.Tensor | float,
    params: LIFParameters,
    need_inv_tau_grad: bool,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dX, dL/d(1/tau))``: the Triton kernel where it applies, else the torch loop with the surrogate object
    (any object with ``grad``). dL/d(1/tau) is unset memory unless ``need_inv_tau_grad``."""
    grad = storage_view(match_layout(grad_spikes, charge))
    flat = storage_view(charge)
    if _use_triton(charge, fused, params):
        traced = _is_traced(charge)
        grad_x, grad_inv_tau = triton_kernels.lif_backward(
            grad, flat, inv_tau, params, need_inv_tau_grad, traced=traced
        )
    else:
        _, backward = _cpu_kernels(fused, charge)
        grad_x, maybe = backward(grad, flat, _inv_tau_tensor(inv_tau, charge), params, need_inv_tau_grad)
        grad_inv_tau = maybe if maybe is not None else charge.new_empty((), dtype=torch.float32)  # unread
    return like_input(grad_x, charge), grad_inv_tau


def _inv_tau_of(tensor: torch.Tensor | None, value: float) -> torch.Tensor | float:
    """``1/tau`` from the schema's pair ``(Tensor? inv_tau, float inv_tau_value)``: the tensor when there is one."""
    return tensor if tensor is not None else value


def _forward_impl(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparsesnn::lif_forward(x, inv_tau, inv_tau_value, fused, *flat settings)``: its signature is set by
    :func:`_schema` (the reset and surrogate settings are for the backward pass)."""
    x, inv_tau, inv_tau_value, fused, *params = args
    return _forward(x, _inv_tau_of(inv_tau, inv_tau_value), LIFParameters.from_flat(*params), fused)


def _backward_impl(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparsesnn::lif_backward(grad_spikes, charge, inv_tau, inv_tau_value, fused, need_inv_tau_grad, *flat
    settings)``: its signature is set by :func:`_schema`."""
    grad_spikes, charge, inv_tau, inv_tau_value, fused, need_inv_tau_grad, *params = args
    settings = LIFParameters.from_flat(*params)
    return _backward(grad_spikes, charge, _inv_tau_of(inv_tau, inv_tau_value), settings, need_inv_tau_grad, fused)


def _schema(impl: Callable[..., Any], *leading: tuple[str, Any]) -> Callable[..., Any]:
    """``impl`` (which takes ``*args``) with the signature its operator's schema is inferred from: the ``leading``
    parameters, then the settings' :data:`FLAT_FIELDS`."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fields = [inspect.Parameter(name, kind, annotation=annotation) for name, annotation in (*leading, *FLAT_FIELDS)]
    impl.__signature__ = inspect.Signature(fields, return_annotation=tuple[torch.Tensor, torch.Tensor])  # type: ignore[attr-defined]
    return impl


_INV_TAU = (("inv_tau", torch.Tensor | None), ("inv_tau_value", float), ("fused", bool))
_schema(_forward_impl, ("x", torch.Tensor), *_INV_TAU)
_schema(_backward_impl, ("grad_spikes", torch.Tensor), ("charge", torch.Tensor), *_INV_TAU, ("need_inv_tau_grad", bool))


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
    _x, inv_tau, inv_tau_value, fused, *params = inputs
    ctx.save_for_backward(output[1], inv_tau)
    ctx.inv_tau_value = inv_tau_value
    ctx.fused = fused
    ctx.params = params


def _op_backward(ctx: Any, grad_spikes: torch.Tensor, _grad_charge: torch.Tensor) -> tuple[Any, ...]:
    charge, inv_tau = ctx.saved_tensors
    need = inv_tau is not None and bool(ctx.needs_input_grad[1])
    grad_x, grad_inv_tau = lif_backward_op(
        grad_spikes, charge, inv_tau, ctx.inv_tau_value, ctx.fused, need, *ctx.params
    )
    # one gradient per input: x, inv_tau, and None for the rest
    return (grad_x, grad_inv_tau.to(inv_tau.dtype) if need else None) + (None,) * (len(ctx.needs_input_grad) - 2)


lif_forward_op.register_autograd(_op_backward, setup_context=_setup_context)


class EagerLIF(torch.autograd.Function):
    """The implementations behind a plain ``autograd.Function``: what an eager call runs. It skips the
    custom-operator dispatch (Python on every call), which only a compiler needs; the kernels and numbers are the
    operators'. It also serves a surrogate of the user's own (any object with ``grad``), which the operators cannot
    carry: such a neuron runs the torch loops on every device.

    ``apply(x, inv_tau, params, fused)``
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters, fused: bool
    ) -> torch.Tensor:
        learnable = isinstance(inv_tau, torch.Tensor)
        spikes, charge = _forward(x.detach(), inv_tau.detach() if learnable else inv_tau, params, fused)
        ctx.save_for_backward(charge, inv_tau if learnable else None)
        ctx.inv_tau = None if learnable else inv_tau
        ctx.params = params
        ctx.fused = fused
        return spikes

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        charge, inv_tau_tensor = ctx.saved_tensors
        inv_tau = inv_tau_tensor if inv_tau_tensor is not None else ctx.inv_tau
        need = inv_tau_tensor is not None and bool(ctx.needs_input_grad[1])
        grad_x, grad_inv_tau = _backward(grad_spikes, charge, inv_tau, ctx.params, need, ctx.fused)
        return grad_x, grad_inv_tau.to(inv_tau_tensor.dtype) if need else None, None, None


def lif_fused(x: torch.Tensor, inv_tau: torch.Tensor | float, params: LIFParameters, fused: bool) -> torch.Tensor:
    """Spikes of the LIF over ``x`` ``[T, ...]`` (``inv_tau`` = 1/tau, a float or a 0-d tensor): through the operators
    when a compiler traces the call and the surrogate is one of the library's, else through :class:`EagerLIF` (the
    same implementations, less host time)."""
    if torch.compiler.is_compiling() and surrogate_code(params.surrogate) is not None:
        tensor, value = (inv_tau, 0.0) if isinstance(inv_tau, torch.Tensor) else (None, float(inv_tau))
        spikes, _ = lif_forward_op(x, tensor, value, fused, *params.flat())
        return spikes  # type: ignore[no-any-return]
    return EagerLIF.apply(x, inv_tau, params, fused)  # type: ignore[no-any-return]


Backend = Literal["auto", "compiled", "eager"]
BACKENDS: tuple[str, ...] = ("auto", "compiled", "eager")


# ----------------------------------------------------------------------------------------------------------------------
# the choice of kernel: compiled (Triton on CUDA, torch.compile on the CPU) or the plain loops
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
    """``fn`` under ``torch.compile``, its float arguments (the settings' ``v_threshold`` and ``v_reset``) specialised:
    one kernel per value, none with a symbolic float input."""
    compiled = torch.compile(fn, dynamic=None, fullgraph=True)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        with torch._dynamo.config.patch(recompile_limit=KERNEL_RECOMPILE_LIMIT, specialize_float=True):
            return compiled(*args)

    return call


_compiled_forward: Callable[..., Any] = _compile_kernel(lif_forward_loop)
_compiled_backward: Callable[..., Any] = _compile_kernel(lif_backward_loop)


def compiled_kernels() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The ``torch.compile``'d forward and backward loops of :mod:`sparsesnn.neuron.kernels.loops` (CPU, eager
    calls)."""
    return _compiled_forward, _compiled_backward


def _use_compiled(backend: str, device: torch.device) -> bool:
    if backend == "eager":
        return False
    if backend == "compiled":
        return True
    return _compiler_available(device)
