"""Surrogate gradients for the Heaviside spike function.

The forward pass of a spiking neuron emits ``s = H(x)`` with ``x = v - v_threshold``; the Heaviside step has a zero
gradient almost everywhere, so backpropagation through time replaces ``dH/dx`` with the derivative of a smooth
function ``sigma(x)`` (Neftci, Mostafa & Zenke, "Surrogate Gradient Learning in SNNs", IEEE SPM 2019).

Each surrogate is a small frozen dataclass: hashable (so compiled kernels can specialise on it), comparable and
printable. ``grad(x)`` is a pure tensor function so that it fuses into the neuron kernels.

Example:
    >>> import torch
    >>> ATan(alpha=2.0).grad(torch.tensor([0.0]))
    tensor([1.])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Surrogate(Protocol):
    """Anything with ``grad(x) -> dsigma/dx``; implementations must be frozen (hashable) dataclasses."""

    def grad(self, x: torch.Tensor) -> torch.Tensor: ...


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class ATan:
    """Arc-tangent surrogate (Fang et al., ICCV 2021, the PLIF paper; SpikingJelly's default).

    ``sigma(x) = arctan(pi/2 * alpha * x) / pi + 1/2`` so ``sigma'(x) = alpha / (2 * (1 + (pi/2 * alpha * x)^2))``.

    >>> import torch
    >>> ATan(alpha=2.0).grad(torch.tensor([0.0, 1.0]))
    tensor([1.0000, 0.0920])
    """

    alpha: float = 2.0

    def __post_init__(self) -> None:
        _check_positive("ATan.alpha", self.alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x).square())


@dataclass(frozen=True)
class Sigmoid:
    """Logistic surrogate: ``sigma(x) = 1 / (1 + exp(-alpha x))``, ``sigma'(x) = alpha * sigma(x) * (1 - sigma(x))``.

    >>> import torch
    >>> Sigmoid(alpha=4.0).grad(torch.tensor([0.0]))
    tensor([1.])
    """

    alpha: float = 4.0

    def __post_init__(self) -> None:
        _check_positive("Sigmoid.alpha", self.alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1.0 - sg)


@dataclass(frozen=True)
class Rectangular:
    """Boxcar surrogate (Wu et al., "STBP", Front. Neurosci. 2018): ``sigma'(x) = 1/width`` for ``|x| < width/2``.

    >>> import torch
    >>> Rectangular(width=1.0).grad(torch.tensor([0.0, 0.49, 0.6]))
    tensor([1., 1., 0.])
    """

    width: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("Rectangular.width", self.width)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (x.abs() < self.width / 2.0).to(x.dtype) / self.width


@dataclass(frozen=True)
class SuperSpike:
    """Fast-sigmoid surrogate of SuperSpike (Zenke & Ganguli, Neural Computation 2018).

    ``sigma'(x) = 1 / (1 + beta * |x|)^2``.

    >>> import torch
    >>> SuperSpike(beta=10.0).grad(torch.tensor([0.0, 0.1]))
    tensor([1.0000, 0.2500])
    """

    beta: float = 10.0

    def __post_init__(self) -> None:
        _check_positive("SuperSpike.beta", self.beta)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + self.beta * x.abs()).square()


@dataclass(frozen=True)
class Triangle:
    """Triangle surrogate of TET's ``ZIF`` (Deng et al., ICLR 2022): ``sigma'(x) = max(0, gamma - |x|) / gamma^2``.

    >>> import torch
    >>> Triangle(gamma=1.0).grad(torch.tensor([0.0, 0.5, 1.5]))
    tensor([1.0000, 0.5000, 0.0000])
    """

    gamma: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("Triangle.gamma", self.gamma)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (self.gamma - x.abs()).clamp(min=0.0) / (self.gamma * self.gamma)


SURROGATES: dict[str, type] = {
    "triangle": Triangle,
    "atan": ATan,
    "sigmoid": Sigmoid,
    "rectangular": Rectangular,
    "superspike": SuperSpike,
}


def make_surrogate(name: str, param: float | None = None, **params: float) -> Surrogate:
    """Build a surrogate by its registry name: ``make_surrogate("atan", alpha=2.0)``, or with its one shape parameter
    unnamed (``alpha``, ``width``, ``beta`` or ``gamma``, whichever it has): ``make_surrogate("atan", 2.0)``."""
    key = name.lower()
    if key not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    cls = SURROGATES[key]
    if param is not None:
        params = {dataclasses.fields(cls)[0].name: param, **params}
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {params} for surrogate {name!r}: {exc}") from None
