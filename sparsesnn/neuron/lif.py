"""The LIF and PLIF neuron modules: thin ``nn.Module`` wrappers over :func:`sparsesnn.neuron.functional.lif_run`
(the module :mod:`sparsesnn.neuron.functional` gives the equations), with their settings checked at construction and
handed to the kernels as one :class:`~sparsesnn.neuron.kernels.params.LIFParameters`. Both declare themselves spiking
(``sparsesnn_spiking = True``, see :mod:`sparsesnn.neuron.spiking`)."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from sparsesnn.neuron.functional import lif_run
from sparsesnn.neuron.kernels.op import BACKENDS, Backend
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.surrogates import ATan, Surrogate


class LIFFamilySpec(Protocol):
    """The LIF family's settings as a spec carries them (:class:`sparsesnn.neuron.kinds.NeuronSpec` is one)."""

    tau: float
    v_threshold: float
    v_reset: float | None
    decay_input: bool
    detach_reset: bool
    surrogate: Surrogate
    backend: Backend


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

    sparsesnn_spiking = True  # declared spiking (sparsesnn.neuron.spiking.SPIKING_ATTRIBUTE)

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
    def from_spec(cls, spec: LIFFamilySpec, settings: object = None) -> LIF:
        """One neuron of a model's :class:`~sparsesnn.neuron.kinds.NeuronSpec` (the ``lif`` / ``plif`` kinds)."""
        return cls(
            spec.tau, spec.v_threshold, spec.v_reset, spec.decay_input, spec.detach_reset, spec.surrogate, spec.backend
        )

    def inv_tau(self) -> torch.Tensor | float:
        """``1/tau``: a float here, a tensor that requires grad in :class:`PLIF`."""
        return 1.0 / self.tau

    def lif_parameters(self) -> LIFParameters:
        """The settings as the kernels take them (read from the attributes on every call, so a change applies): a
        soft reset (``v_reset=None``) leaks towards 0."""
        return LIFParameters(
            v_threshold=float(self.v_threshold),
            v_reset=0.0 if self.v_reset is None else float(self.v_reset),
            hard_reset=self.v_reset is not None,
            decay_input=bool(self.decay_input),
            detach_reset=bool(self.detach_reset),
            surrogate=self.surrogate,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lif_run(x, self.inv_tau(), self.lif_parameters(), self.backend)

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
