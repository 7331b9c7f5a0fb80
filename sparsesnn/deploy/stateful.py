"""State carried across calls: :class:`StreamingLIF`, a LIF / PLIF (or its :class:`InferenceLIF`) whose membrane
persists between the calls of a stream (:mod:`sparsesnn.deploy.stream`), and :class:`StreamError`, what a stream
refuses."""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsesnn.core.errors import SparseSNNError
from sparsesnn.deploy.event_layers import EventBackend, resolve_backend
from sparsesnn.deploy.lif import InferenceLIF, is_plain_lif, lif_from
from sparsesnn.neuron.kernels.loops import is_time_outer_dense
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.lif import LIF


class StreamError(SparseSNNError):
    """A model the stream cannot run step by step, or input it cannot take."""


class StreamingLIF(nn.Module):
    """A LIF / PLIF (or its :class:`InferenceLIF`) whose membrane persists between calls.

    Each call on ``[t, B, ...]`` float32 input runs the equations of :mod:`sparsesnn.deploy.lif` for ``t`` steps
    from ``V[-1] = v`` (the membrane the previous call left; ``v_reset`` everywhere after :meth:`reset` or at the
    start) and keeps ``V[t-1]``. The membrane has the shape of one step ``[B, ...]``: a call with another shape
    than the calls since the last :meth:`reset` is a :class:`StreamError`. ``last_spikes`` counts the spikes of the
    last call."""

    sparsesnn_spiking = True  # declared spiking (sparsesnn.neuron.spiking): metrics and compaction see it

    def __init__(self, inv_tau: float, params: LIFParameters, backend: EventBackend = "auto") -> None:
        super().__init__()
        self.inv_tau = float(inv_tau)
        self.params = params
        self.backend = resolve_backend(backend)
        # the state lives in the instance's __dict__ (nn.Module.__setattr__ would cost more than the step's loop)
        self.__dict__.update(v=None, step_shape=None, step_strides=None, last_spikes=0)
        self.v: torch.Tensor | None  # [N] float32, the membrane in the memory order of the first call's input
        self.step_shape: tuple[int, ...] | None
        self.last_spikes: int  # spikes of the last call

    @classmethod
    def of(cls, neuron: nn.Module, backend: EventBackend = "auto") -> StreamingLIF:
        """The streaming form of a :class:`LIF` / :class:`PLIF` (exactly those classes) or an :class:`InferenceLIF`."""
        if isinstance(neuron, InferenceLIF):
            return cls(neuron.inv_tau, neuron.params, backend)
        if not is_plain_lif(neuron):
            raise TypeError(f"StreamingLIF takes a sparsesnn LIF, PLIF or InferenceLIF, got {type(neuron).__name__}")
        assert isinstance(neuron, LIF)
        inv_tau = neuron.inv_tau()
        value = float(inv_tau.detach()) if isinstance(inv_tau, torch.Tensor) else float(inv_tau)
        return cls(value, neuron.lif_parameters(), backend)

    def reset(self) -> None:
        """Back to rest: the next call starts from ``V[-1] = v_reset``."""
        self.__dict__.update(v=None, step_shape=None, step_strides=None, last_spikes=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise StreamError(f"LIF input must be time-major [t, B, ...], got shape {tuple(x.shape)}")
        x = x.detach().to(torch.float32)
        state = self.__dict__
        strides = state["step_strides"]
        if strides is None:  # the first call keeps the memory order of its input (channels-last stays so, no copy)
            strides = (x[:1] if is_time_outer_dense(x) else x[:1].contiguous()).stride()[1:]
        v = self.membrane(tuple(x.shape[1:]), strides)
        steps, n = x.shape[0], v.shape[0]
        dense = (n, *state["step_strides"])  # time outermost, then the membrane's memory order
        if x.stride()[1:] != state["step_strides"] or (steps > 1 and x.stride(0) != n):
            # another memory order than the membrane's: copy into it (one neuron keeps one index per element)
            x = torch.empty_strided(x.shape, dense, dtype=x.dtype).copy_(x)
        flat = x.as_strided((steps, n), (n, 1), x.storage_offset())  # a view: [t, N] in the membrane's order
        return self.advance(flat, v).as_strided(x.shape, dense)

    def membrane(self, step_shape: tuple[int, ...], step_strides: tuple[int, ...]) -> torch.Tensor:
        """The carried membrane ``[N]`` for steps of ``step_shape`` laid out with ``step_strides``: at rest
        (``v_reset``) on the first call after :meth:`reset`, which fixes shape and layout; the one the last call left
        afterwards, where another shape is a :class:`StreamError`."""
        state = self.__dict__
        if state["v"] is None:
            v = torch.full((math.prod(step_shape),), self.params.v_reset, dtype=torch.float32)
            state.update(v=v, step_shape=step_shape, step_strides=step_strides)
        elif step_shape != state["step_shape"]:
            raise StreamError(
                f"a neuron's input changed shape from {state['step_shape']} to {step_shape} per step "
                "mid-stream (another batch size or frame size); reset() the stream first"
            )
        return state["v"]  # type: ignore[no-any-return]

    def advance(self, flat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Spikes ``[t, N]`` of ``flat`` (float32, contiguous, in the membrane's order) from the membrane ``v``, which
        is left holding the last step's; ``last_spikes`` counts them."""
        spikes, self.__dict__["last_spikes"] = lif_from(flat, v, self.inv_tau, self.params, self.backend)
        return spikes

    def extra_repr(self) -> str:
        p = self.params
        reset = f"v_reset={p.v_reset}" if p.hard_reset else "soft reset"
        return f"inv_tau={self.inv_tau:.6g}, v_threshold={p.v_threshold}, {reset}, decay_input={p.decay_input}"
