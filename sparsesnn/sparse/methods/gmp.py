"""GMP (Zhu & Gupta, "To prune, or not to prune", 2017): gradual magnitude pruning, dense to sparse.

Training starts dense. Every ``update_every`` steps between ``start_at`` and ``end_at`` (fractions of training),
each layer's density follows the cubic ramp :func:`~sparsesnn.sparse.schedules.cubic_density` from 1 to its target
(the target spread over layers by ``distribution``; the paper uses uniform), and the smallest-magnitude active weights
are removed to reach it. Pruned weights never return.

At a coarse ``granularity`` (:mod:`sparsesnn.sparse.granularity`) the ramp counts groups: at density ``s_t`` a
layer keeps ``max(1, round(s_t * n_groups))`` whole groups, and the groups of smallest ``sum |w|`` (L1 norm) go.

The last pruning step is never the run's last optimiser step: ``end_at = 1`` (or a window that ends on the last step)
ends the ramp one step earlier, at step ``T - 1`` of ``T``, so that the final masks are the ones the last step
trained (the library's rule, docs/methods.md). The paper's ramp ends well before the end of training anyway
(``end_at = 0.75`` here), where this changes nothing.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from sparsesnn.sparse.criteria import CriterionContext, prune_magnitude
from sparsesnn.sparse.learner import ScheduleUnit, StructureLearner
from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.schedules import cubic_density
from sparsesnn.sparse.settings import LearnerSettings


class GMPSettings(LearnerSettings):
    """Gradual magnitude pruning: the cubic ramp of Zhu & Gupta from dense to the target."""

    distribution: Literal["uniform", "er", "erk"] = Field(
        "uniform", description="how the density is spread over layers (the paper: uniform)"
    )
    update_every: int = Field(100, ge=1, description="pruning period, in optimiser steps")
    start_at: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of training where the ramp starts")
    end_at: float = Field(0.75, gt=0.0, le=1.0, description="fraction of training where the ramp ends")

    @model_validator(mode="after")
    def _window(self) -> GMPSettings:
        if not self.start_at < self.end_at:
            raise ValueError(f"need start_at < end_at, got start_at={self.start_at}, end_at={self.end_at}")
        return self


@METHODS.register("gmp")
class GMP(StructureLearner):
    name = "gmp"
    Settings: ClassVar[type[LearnerSettings]] = GMPSettings
    starts_dense = True

    def configure(self, settings: LearnerSettings) -> None:
        super().configure(settings)
        assert isinstance(settings, GMPSettings)
        self.update_every = settings.update_every
        self.start_at, self.end_at = settings.start_at, settings.end_at

    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "steps"

    def schedule_problem(self) -> str | None:
        missing = self.budget_problem(f"gradual pruning from start_at = {self.start_at} to end_at = {self.end_at}")
        if missing is not None:
            return missing
        start, end = self._window()
        if end <= start:
            return (
                f"the ramp from step {start} to {end} of {self.total_steps} has no step to prune at before the last "
                "one; lower start_at or train longer"
            )
        return None

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
            grouping = self.grouping(layer)  # single weights by default: reduce and expand are then the identity
            present = grouping.all_of(layer.mask)
            n = int(present.sum()) - grouping.group_count(self.layer_density_at(layer.name, self.steps))
            if n > 0:
                dropped = prune_magnitude(grouping.reduce(layer.weight.detach().abs()), present, n, ctx)
                self.masks.set_mask(layer, layer.mask & ~grouping.expand(dropped))
                changed = True
        return changed
