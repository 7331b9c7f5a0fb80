"""Training objectives on time-major model output ``[T, B, classes]``.

- ``ce``: cross-entropy on the time-averaged output, ``CE(mean_t z[t], y)`` (the usual readout of direct-trained
  SNNs, e.g. Fang et al. 2021).
- ``mse``: mean squared error between the firing rate ``mean_t s[t]`` of spiking output neurons and the one-hot
  target, ``mean((r - onehot(y))^2)`` (SD-SNN, BrainCog's ``UnilateralMse``-free variant).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_over_time(output: torch.Tensor) -> torch.Tensor:
    """``[T, B, C] -> [B, C]``; 2-d output (a non-temporal model) passes through."""
    return output.mean(0) if output.dim() == 3 else output


def cross_entropy_on_mean(label_smoothing: float = 0.0) -> LossFn:
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(mean_over_time(output), target, label_smoothing=label_smoothing)

    return loss


def mse_on_rates(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    rates = mean_over_time(output)
    return F.mse_loss(rates, F.one_hot(target, rates.shape[-1]).to(rates.dtype))


def build_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    if name == "ce":
        return cross_entropy_on_mean(label_smoothing)
    if name == "mse":
        return mse_on_rates
    raise ValueError(f"unknown loss {name!r}; choose 'ce' or 'mse'")
