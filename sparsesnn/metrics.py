"""Measurements of a spiking network: accuracy and firing rates (more in later modules: connections, SOPs, energy)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from sparsesnn.neurons import is_spiking


def correct_count(output: torch.Tensor, target: torch.Tensor) -> int:
    """Number of samples whose time-averaged output has its maximum at the target class."""
    scores = output.mean(0) if output.dim() == 3 else output
    return int((scores.argmax(-1) == target).sum())


class FiringRateMonitor:
    """Accumulates the mean firing rate of every spiking module while active (forward hooks, no grad kept).

    ``rates()`` maps module names to the mean of their output spikes over time, batch and neurons.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    @contextmanager
    def active(self) -> Iterator[FiringRateMonitor]:
        handles = []
        for name, module in self.model.named_modules():
            if is_spiking(module):
                handles.append(module.register_forward_hook(self._hook(name)))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self._sums[name] = self._sums.get(name, 0.0) + float(output.detach().sum())
            self._counts[name] = self._counts.get(name, 0) + output.numel()

        return record

    def rates(self) -> dict[str, float]:
        return {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}

    def mean_rate(self) -> float:
        total = sum(self._counts.values())
        return sum(self._sums.values()) / total if total else 0.0
