"""The LIF family's forward pass for inference only: one compiled loop, no autograd, no per-call dispatch.

A trained :class:`~sparsesnn.neuron.lif.LIF` (or :class:`~sparsesnn.neuron.lif.PLIF`, its ``1/tau`` fixed at the
trained value) runs in inference as (:mod:`sparsesnn.neuron.functional`, after Fang et al. ICCV 2021, eq. 1-4), for
``t = 0 .. T-1`` with ``V[-1] = v_reset``::

    H[t] = V[t-1] + inv_tau * (X[t] - (V[t-1] - v_reset))    (decay_input)
           V[t-1] - inv_tau * (V[t-1] - v_reset) + X[t]          (otherwise)
    S[t] = 1[H[t] - v_threshold >= 0]
    V[t] = v_reset if S[t] else H[t]                         (hard reset)
           H[t] - v_threshold * S[t]                         (soft reset)

The training path goes through an autograd-aware operator (a ``torch.compile``'d loop on the CPU), whose fixed cost
per call dominates a small layer at batch 1. :class:`InferenceLIF` runs the same float32 arithmetic in one numba loop
(no ``fastmath``, so no reassociation or fused multiply-add: the hard reset's ``H * (1 - S) + v_reset * S`` equals the
select above exactly for ``S`` in {0, 1}), and falls back to the plain tensor loop of
:mod:`sparsesnn.neuron.kernels.loops` without numba. Spikes equal the training kernels' up to float rounding of
``H``, i.e. except for a membrane within about one float32 ulp of the threshold.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsesnn.deploy.event_layers import EventBackend, inference, resolve_backend
from sparsesnn.neuron.kernels.loops import is_time_outer_dense, like_input, storage_view
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.lif import LIF, PLIF


@functools.cache
def _numba_lif_span() -> Any:
    """One step of neurons ``start .. start + count``, compiled on first use (once per process) and inlined where it
    is called: the arithmetic of the module docstring on ``x`` and the membrane ``v`` (read as ``V[t-1]``, left holding
    ``V[t]``), the spikes into ``spikes[:count]``; returns how many fired. :class:`InferenceLIF`'s loop and the fused
    block loop of :mod:`sparsesnn.deploy.block_fusion` share it, so both do the same float32 operations."""
    import numba

    @numba.njit(nogil=True, cache=False, boundscheck=False, inline="always")
    def lif_span(  # pragma: no cover - compiled
        x: Any,
        v: Any,
        start: int,
        count: int,
        spikes: Any,
        inv_tau: Any,
        v_threshold: Any,
        v_reset: Any,
        hard_reset: bool,
        decay_input: bool,
    ) -> int:
        fired = 0
        for i in range(count):
            vi = v[start + i]
            if decay_input:
                h = vi + inv_tau * (x[start + i] - (vi - v_reset))
            else:
                h = vi - inv_tau * (vi - v_reset) + x[start + i]
            fire = h - v_threshold >= 0
            fired += fire
            spikes[i] = np.float32(1.0) if fire else np.float32(0.0)
            if hard_reset:
                v[start + i] = v_reset if fire else h
            else:
                v[start + i] = h - v_threshold if fire else h
        return fired

    return lif_span


@functools.cache
def _numba_lif() -> Any:
    """The loop, compiled on first use (once per process): spikes into ``out`` ``[T, N]``, the membrane ``v`` ``[N]``
    read as ``V[-1]`` and left holding ``V[T-1]``; returns the number of spikes."""
    import numba

    lif_span = _numba_lif_span()

    @numba.njit(nogil=True, cache=False, boundscheck=False)
    def lif(  # pragma: no cover - compiled
        x: Any,
        inv_tau: Any,
        v_threshold: Any,
        v_reset: Any,
        hard_reset: bool,
        decay_input: bool,
        out: Any,
        v: Any,
    ) -> int:
        steps, n = out.shape
        count = 0
        for t in range(steps):
            xt = x[t] if x.shape[0] > 1 else x[0]  # one input row for every step: a step-invariant input
            count += lif_span(xt, v, 0, n, out[t], inv_tau, v_threshold, v_reset, hard_reset, decay_input)
        return count

    return lif


def lif_numba(
    flat: np.ndarray, v: np.ndarray, inv_tau: float, params: LIFParameters, steps: int | None = None
) -> tuple[np.ndarray, int]:
    """:func:`lif_from`'s compiled loop on numpy arrays (``flat`` ``[T, N]`` and ``v`` ``[N]``, contiguous float32,
    ``v`` updated in place): the spikes and their number. ``steps``: the ``[1, N]`` input repeated over that many
    steps (the same arithmetic as on the repeated rows, without making them)."""
    out = np.empty((flat.shape[0] if steps is None else steps, flat.shape[1]), np.float32)
    p = params
    count = _numba_lif()(
        flat,
        np.float32(inv_tau),
        np.float32(p.v_threshold),
        np.float32(p.v_reset),
        p.hard_reset,
        p.decay_input,
        out,
        v,
    )
    return out, int(count)


def lif_from(
    flat: torch.Tensor,
    v: torch.Tensor,
    inv_tau: float,
    params: LIFParameters,
    backend: EventBackend,
    steps: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Spikes ``[T, N]`` of contiguous float32 input ``flat`` ``[T, N]`` and their number, starting from the membrane
    ``v`` (``[N]``, contiguous float32, the ``V[-1]`` of the equations) and leaving ``V[T-1]`` in ``v``, in place.
    With ``v = v_reset`` everywhere this is :class:`InferenceLIF`'s call; with the ``v`` a previous call left, ``T``
    calls of one step each give the spikes of one ``T``-step call bit for bit (the same float32 operations in the
    same order, one step after the other). ``backend`` "numba" runs the compiled loop, "torch" the plain loop of
    :func:`~sparsesnn.neuron.kernels.loops.lif_forward_loop`'s arithmetic. ``steps``: ``flat`` is one row ``[1, N]``
    that is the input of every one of ``steps`` steps."""
    if backend == "numba":
        out, count = lif_numba(flat.numpy(), v.numpy(), inv_tau, params, steps)
        return torch.from_numpy(out), count
    if steps is not None:
        flat = flat.expand(steps, flat.shape[1])
    spikes, v_last = _torch_loop_from(flat, v, inv_tau, params)
    v.copy_(v_last)
    return spikes, int(spikes.count_nonzero())


def _torch_loop_from(
    x: torch.Tensor, v: torch.Tensor, inv_tau: float, params: LIFParameters
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~sparsesnn.neuron.kernels.loops.lif_forward_loop`'s forward arithmetic from the membrane ``v``:
    ``(spikes [T, N], V[T-1])``."""
    if x.shape[0] == 0:
        return x.clone(), v
    v_threshold, v_reset = params.v_threshold, params.v_reset
    spikes = []
    for t in range(x.shape[0]):
        xt = x[t]
        if params.decay_input:
            h = v + inv_tau * (xt - (v - v_reset))
        else:
            h = v - inv_tau * (v - v_reset) + xt
        s = (h - v_threshold >= 0).to(torch.float32)
        v = h * (1.0 - s) + v_reset * s if params.hard_reset else h - v_threshold * s
        spikes.append(s)
    return torch.stack(spikes), v


def is_plain_lif(module: nn.Module) -> bool:
    """Whether ``module`` is exactly our :class:`LIF` or :class:`PLIF` (not a subclass, whose forward may differ)."""
    return type(module) in (LIF, PLIF)


class InferenceLIF(nn.Module):
    """A trained :class:`LIF` / :class:`PLIF` for inference on ``[T, B, ...]`` float32 CPU input (see the module
    docstring); returns float32 spikes of the input's shape."""

    def __init__(self, neuron: nn.Module, backend: EventBackend = "auto") -> None:
        super().__init__()
        if not is_plain_lif(neuron):
            raise TypeError(f"InferenceLIF takes a sparsesnn LIF or PLIF, got {type(neuron).__name__}")
        assert isinstance(neuron, LIF)
        inv_tau = neuron.inv_tau()
        self.inv_tau = float(inv_tau.detach()) if isinstance(inv_tau, torch.Tensor) else float(inv_tau)
        self.params: LIFParameters = neuron.lif_parameters()
        self.backend = resolve_backend(backend)
        p = self.params  # the compiled loop's scalar arguments, converted once
        self._scalars = (
            np.float32(self.inv_tau),
            np.float32(p.v_threshold),
            np.float32(p.v_reset),
            p.hard_reset,
            p.decay_input,
        )
        self._orders: dict[tuple[torch.Size, tuple[int, ...]], tuple[Any, Any] | None] = {}

    @inference
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"LIF input must be time-major [T, B, ...], got shape {tuple(x.shape)}")
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        steps = x.shape[0]
        invariant = steps > 1 and x.stride(0) == 0  # one step expanded over T (a step-invariant input): read it once
        if self.backend == "numba" and steps > 0:
            order = self._memory_order(x[:1] if invariant else x)
            if order is not None:
                return self._numba_forward(x, order, invariant)
        if invariant:
            one = x[:1] if is_time_outer_dense(x[:1]) else x[:1].contiguous()
            flat = storage_view(one)
            spikes = self._spikes(flat, steps)
            return spikes.as_strided(x.shape, (flat.shape[1], *one.stride()[1:]))
        flat = storage_view(x)  # [T, N] in x's own memory order (channels-last stays channels-last, no copy)
        return like_input(self._spikes(flat), x)

    def _memory_order(self, x: torch.Tensor) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None] | None:
        """The dimensions of ``x`` from outermost to innermost in memory (time first) and the inverse permutation
        (both None when that is ``x``'s own order), where ``x`` is dense with time outermost
        (:func:`~sparsesnn.neuron.kernels.loops.is_time_outer_dense`); else None. Kept per shape and strides: a
        deployed model sees the same few layouts call after call."""
        key = (x.shape, x.stride())
        if key not in self._orders:
            order = (0, *sorted(range(1, x.dim()), key=lambda d: (-x.stride(d), d)))
            inverse = tuple(sorted(range(x.dim()), key=order.__getitem__))
            identity = order == tuple(range(x.dim()))  # memory order is x's own: no transpose
            self._orders[key] = ((None, None) if identity else (order, inverse)) if is_time_outer_dense(x) else None
        return self._orders[key]

    def _numba_forward(
        self, x: torch.Tensor, order: tuple[tuple[int, ...] | None, tuple[int, ...] | None], invariant: bool
    ) -> torch.Tensor:
        """The compiled loop on ``x``'s memory as numpy views (no torch call but the wrapping): ``x`` (or its first
        step, when ``invariant``) read as ``[T, N]`` in memory order, the spikes written in the same order and
        returned with ``x``'s shape (a step-invariant input's spikes with its first step's strides)."""
        a = x.detach().numpy()
        if invariant:
            a = a[:1]
        permute, inverse = order
        in_order = a if permute is None else a.transpose(permute)
        flat = in_order.reshape(a.shape[0], -1)  # a view: the order makes it dense
        spikes = self.spikes_from_rest(flat, x.shape[0]).reshape(x.shape[0], *in_order.shape[1:])
        return torch.from_numpy(spikes if inverse is None else spikes.transpose(inverse))

    def spikes_from_rest(self, flat: np.ndarray, steps: int) -> np.ndarray:
        """The compiled loop's spikes ``[steps, N]`` for float32 input ``flat`` (``[steps, N]``, or ``[1, N]`` the
        same at every step), the membrane starting at rest."""
        out = np.empty((steps, flat.shape[1]), np.float32)
        _numba_lif()(flat, *self._scalars, out, np.full(flat.shape[1], self.params.v_reset, np.float32))
        return out

    def _spikes(self, flat: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """The spikes ``[T, N]`` of ``flat`` (contiguous ``[T, N]``, or ``[1, N]`` repeated over ``steps``) from
        rest."""
        v = torch.full((flat.shape[1],), self.params.v_reset, dtype=torch.float32)
        return lif_from(flat, v, self.inv_tau, self.params, self.backend, steps=steps)[0]

    def extra_repr(self) -> str:
        p = self.params
        reset = f"v_reset={p.v_reset}" if p.hard_reset else "soft reset"
        return (
            f"inv_tau={self.inv_tau:.6g}, v_threshold={p.v_threshold}, {reset}, decay_input={p.decay_input}, "
            f"backend={self.backend}"
        )
