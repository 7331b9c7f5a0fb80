"""A momentum of dense gradients, ``m <- beta * m + g`` per masked layer, every optimiser step.

Growth by momentum (Sparse Momentum; the PQ index's Stage II) ranks absent synapses by ``|m|``. The dense gradient
``g = dL/d(W * M)`` is what the learner captures for each masked layer (:class:`~sparsesnn.sparse.learner.
StructureLearner`); the tracker only accumulates it, on the weights' device, and survives resume.
"""

from __future__ import annotations

from typing import Any

import torch


class GradientMomentum:
    """Per-layer momentum of dense gradients (``beta``: its decay, in ``[0, 1)``)."""

    def __init__(self, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.buffers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def accumulate(self, grads: dict[str, torch.Tensor]) -> None:
        """``m <- beta * m + g`` for every layer that has a gradient this step (``m = g`` the first time)."""
        for name, grad in grads.items():
            m = self.buffers.get(name)
            self.buffers[name] = grad.clone() if m is None else m.mul_(self.beta).add_(grad)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.buffers.items()}

    def load(self, state: dict[str, torch.Tensor], devices: dict[str, torch.device]) -> None:
        """Restore the buffers, each moved to its layer's device (a checkpoint is read on the CPU)."""
        self.buffers = {k: v.to(devices[k], copy=True) for k, v in state.items()}


class MomentumGrowthState:
    """Mixin of a structure learner that grows by a dense-gradient momentum and records a history of its updates;
    both are its per-run state, kept in checkpoints (``extra_state``) so that a resumed run continues exactly."""

    tracker: GradientMomentum
    history: list[dict[str, Any]]
    layers: list[Any]  # the learner's masked layers

    def init_growth_state(self, beta: float) -> None:
        self.tracker = GradientMomentum(beta)
        self.history = []

    @property
    def momentum(self) -> dict[str, torch.Tensor]:
        """The dense-gradient momentum per layer that ranks growth candidates."""
        return self.tracker.buffers

    def extra_state(self) -> dict[str, Any]:
        return {"momentum": self.tracker.state(), "history": list(self.history)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.tracker.load(state["momentum"], {layer.name: layer.weight.device for layer in self.layers})
        self.history = list(state["history"])
