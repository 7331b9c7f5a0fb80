"""GMP (Zhu & Gupta, "To prune, or not to prune", 2017): gradual magnitude pruning, dense to sparse.

Training starts dense. Every ``update_every`` steps between ``start_at`` and ``end_at`` (fractions of training),
each layer's density follows the cubic ramp :func:`~sparsesnn.sparse.schedules.cubic_density` from 1 to its target
(the target spread over layers by ``distribution``; the paper uses uniform), and the smallest-magnitude active weights
are removed to reach it. Pruned weights never return.

The last pruning step is never the run's last optimiser step: ``end_at = 1`` (or a window that ends on the last step)
ends the ramp one step earlier, at step ``T - 1`` of ``T``, so that the final masks are the ones the last step
trained (the library's rule, docs/methods.md). The paper's ramp ends well before the end of training anyway
(``end_at = 0.75`` here), where this changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparsesnn.sparse.criteria import CriterionContext, prune_magnitude
from sparsesnn.sparse.learner import ScheduleUnit, StructureLearner
from sparsesnn.sparse.masks import active_count
from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.schedules import cubic_density


@METHODS.register("gmp")
class GMP(StructureLearner):
    name = "gmp"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        update_every: int = 100,
        start_at: float = 0.0,
        end_at: float = 0.75,
        **kwargs: Any,
    ) -> None:
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        if not 0.0 <= start_at < end_at <= 1.0:
            raise ValueError(f"need 0 <= start_at < end_at <= 1, got start_at={start_at}, end_at={end_at}")
        self.update_every = int(update_every)
        self.start_at, self.end_at = float(start_at), float(end_at)
        kwargs.setdefault("distribution", "uniform")
        super().__init__(model, optimizer, initial_density=1.0, **kwargs)
        start, end = self._window()
        if self.total_steps and end <= start:
            raise ValueError(
                f"gmp: the ramp from step {start} to {end} of {self.total_steps} has no step to prune at before the "
                "last one; lower start_at or train longer"
            )

    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "steps"

    def schedule_problem(self) -> str | None:
        return self.budget_problem(f"gradual pruning from start_at = {self.start_at} to end_at = {self.end_at}")

    def _window(self) -> tuple[int, int]:
        """Steps ``(t_0, t_end]`` of the ramp: ``floor(start_at T)``, ``floor(end_at T)`` but at most ``T - 1``, so
        that the last optimiser step ``T`` trains the final masks (``T`` = ``total_steps``; unknown: ``t_end >= 1``)."""
        end = max(1, math.floor(self.end_at * self.total_steps))
        if self.total_steps:
            end = min(end, self.total_steps - 1)
        return math.floor(self.start_at * self.total_steps), end

    def layer_density_at(self, name: str, step: int) -> float:
        start, end = self._window()
        return cubic_density(step, start, end, 1.0, self.targets[name])

    @torch.no_grad()
    def update(self) -> bool:
        start, end = self._window()
        on_grid = self.steps % self.update_every == 0 or self.steps == end
        if not (start < self.steps <= end and on_grid):
            return False
        assert self.masks is not None
        changed = False
        ctx = CriterionContext(generator=self.generator)
        for layer in self.layers:
            keep = active_count(layer.numel(), self.layer_density_at(layer.name, self.steps))
            n = layer.active() - keep
            if n > 0:
                dropped = prune_magnitude(layer.weight, layer.mask, n, ctx)
                self.masks.set_mask(layer, layer.mask & ~dropped)
                changed = True
        return changed
