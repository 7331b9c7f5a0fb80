"""Dynamic sparse training at a fixed density: prune a fraction of the active synapses, regrow as many elsewhere.

Every ``update_every`` optimiser steps (or epochs, with ``update_unit="epochs"``) and until ``stop_at`` of
training, each masked layer with ``a`` active synapses drops ``n = floor(alpha_t * a)`` of them by the prune
criterion and grows ``n`` among the synapses that were absent *before* the drop (so dropped and grown sets are
disjoint), by the grow criterion. The layer's density is unchanged. Regrown synapses start at ``grow_init`` (0) with
zero optimiser moments. ``alpha_t`` follows :func:`~sparsesnn.sparse.schedules.drop_fraction`.

At a coarse ``granularity`` (:mod:`sparsesnn.sparse.granularity`) the same rule runs on whole groups: a layer
with ``a`` fully present groups drops ``n = floor(alpha_t * a)`` of them, scored by the criteria on group sums
(:mod:`sparsesnn.sparse.criteria`), and grows ``n`` among the groups that were entirely absent before the drop and
whose every slot belongs to a live neuron. When the groups of a layer differ in size (``block`` granularity whose
``block_size`` does not divide the outputs: each column's last block is shorter) each size runs the rule on its own
groups, ``floor(alpha_t * a_size)``, so that the weight count of the layer is unchanged too. The ``set`` prune
criterion reads the sign of single weights and is refused there.

An update at step (or epoch) ``t`` needs ``t < floor(stop_at * T)`` with ``stop_at <= 1``, so the last step (epoch)
of a run never rewires: no topology change follows the last optimiser step (the library's rule, docs/methods.md).

SET, RigL and ESL-SNN are this learner with different defaults.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from sparsesnn.sparse.criteria import GROW, PRUNE, SIGNED, CriterionContext
from sparsesnn.sparse.granularity import Grouping
from sparsesnn.sparse.learner import LayerChange, ScheduleUnit, StructureLearner
from sparsesnn.sparse.masks import MaskedLayer
from sparsesnn.sparse.momentum import MomentumGrowthState
from sparsesnn.sparse.schedules import DROP_SCHEDULES, PeriodicSchedule
from sparsesnn.sparse.settings import LearnerSettings


class RewiringSettings(LearnerSettings):
    """Prune-and-regrow at constant density."""

    update_every: int = Field(100, ge=1, description="rewiring period, in steps or epochs (update_unit)")
    update_unit: Literal["steps", "epochs"] = Field("steps", description="what update_every counts")
    drop_fraction: float = Field(0.3, ge=0.0, le=1.0, description="alpha_0: fraction of active synapses rewired")
    schedule: Literal[DROP_SCHEDULES] = Field("cosine", description="decay of alpha over training")  # type: ignore[valid-type]
    stop_at: float = Field(0.75, ge=0.0, le=1.0, description="fraction of training after which the topology is frozen")
    prune: str = Field("magnitude", description="prune criterion (sparsesnn.sparse.criteria.PRUNE)")
    grow: str = Field("gradient", description="grow criterion (sparsesnn.sparse.criteria.GROW)")
    grow_init: float = Field(0.0, description="value of a regrown weight")
    momentum_beta: float = Field(
        0.9, ge=0.0, lt=1.0, description="decay of the dense-gradient momentum (grow = momentum)"
    )

    @field_validator("prune", "grow")
    @classmethod
    def _criterion(cls, v: str, info: ValidationInfo) -> str:
        registry = PRUNE if info.field_name == "prune" else GROW
        if v not in registry:
            raise ValueError(f"unknown {registry.kind}; choose one of {registry.names()}")
        return v

    @model_validator(mode="after")
    def _signed_needs_weights(self) -> RewiringSettings:
        if self.granularity != "weight" and self.prune in SIGNED:
            raise ValueError(
                f"prune = {self.prune!r} reads the sign of single weights and has no meaning for groups "
                f"(granularity = {self.granularity!r}): choose prune = 'magnitude' or 'random', or granularity = "
                "'weight'"
            )
        return self


class RewiringLearner(MomentumGrowthState, StructureLearner):
    """Prune-and-regrow at constant density (see the module docstring); settings: :class:`RewiringSettings`."""

    name = "rewiring"
    Settings: ClassVar[type[LearnerSettings]] = RewiringSettings

    def configure(self, settings: LearnerSettings) -> None:
        super().configure(settings)
        assert isinstance(settings, RewiringSettings)
        s = settings
        #: when and how much (the timing), apart from what: the prune and grow criteria below
        self.timing = PeriodicSchedule(s.update_every, s.update_unit, s.stop_at, s.drop_fraction, s.schedule)
        self.prune_fn, self.grow_fn = PRUNE[s.prune], GROW[s.grow]
        self.prune_name, self.grow_name = s.prune, s.grow
        self.grow_init = s.grow_init
        self.init_growth_state(s.momentum_beta)

    # -- when -------------------------------------------------------------------------------------------------------
    @property
    def schedule_unit(self) -> ScheduleUnit:
        return self.timing.unit

    @property
    def timing_total(self) -> int:
        """The budget the timing counts in: epochs or steps."""
        return self.total_epochs if self.timing.unit == "epochs" else self.total_steps

    def schedule_problem(self) -> str | None:
        t = self.timing
        missing = self.budget_problem(f"rewiring every {t.every} {t.unit} until stop_at = {t.stop_at} of the run")
        if missing is not None:
            return missing
        if t.alpha0 <= 0.0:
            return "drop_fraction = 0 never rewires: give a drop_fraction > 0 (or use the static method)"
        return t.never_fires(self.timing_total, "rewiring", "update_every")

    def alpha(self, t: int) -> float:
        """The drop fraction at step/epoch ``t`` (0 once rewiring has stopped)."""
        return self.timing.alpha(t, self.timing_total)

    def is_update(self, t: int) -> bool:
        return self.timing.is_update(t, self.timing_total)

    def wants_dense_grad(self, step: int) -> bool:
        if self.grow_name == "momentum":
            return True
        return self.grow_name == "gradient" and self.timing.unit == "steps" and self.is_update(step)

    # -- what -------------------------------------------------------------------------------------------------------
    def before_update(self) -> None:
        if self.grow_name == "momentum":
            self.tracker.accumulate(self._dense_grads)

    def update(self) -> bool:
        if self.timing.unit != "steps" or not self.is_update(self.steps):
            return False
        return self.rewire(self.alpha(self.steps), at=self.steps)

    def on_epoch_end(self, epoch: int) -> bool:
        self._note_epoch_end(epoch)
        if self.timing.unit != "epochs" or self.masks is None or not self.is_update(epoch + 1):
            return False
        return self.rewire(self.alpha(epoch + 1), at=epoch + 1)

    def context(self, layer: MaskedLayer) -> CriterionContext:
        return CriterionContext(
            generator=self.generator,
            dense_grad=self._dense_grads.get(layer.name),
            momentum=self.momentum.get(layer.name),
        )

    def group_context(self, layer: MaskedLayer, grouping: Grouping) -> CriterionContext:
        """:meth:`context` with the dense gradient and the momentum summed in absolute value over each group."""
        ctx = self.context(layer)
        return CriterionContext(
            generator=ctx.generator,
            dense_grad=None if ctx.dense_grad is None else grouping.reduce(ctx.dense_grad.abs()),
            momentum=None if ctx.momentum is None else grouping.reduce(ctx.momentum.abs()),
        )

    @torch.no_grad()
    def rewire_layer(self, layer: MaskedLayer, n: int) -> tuple[int, int]:
        """Drop ``n`` active synapses of ``layer`` and grow ``n`` absent ones; returns ``(dropped, grown)``.

        Growth draws from the synapses absent *before* the drop, so a synapse dropped now is never regrown in the
        same update; both sets are reported in :attr:`last_change`.
        """
        assert self.masks is not None
        mask = layer.mask
        absent_before = ~mask & layer.alive_synapse_slots()  # never grow into a pruned neuron
        n = min(n, int(absent_before.sum()), int(mask.sum()))
        if n <= 0:
            return 0, 0
        ctx = self.context(layer)
        dropped = self.prune_fn(layer.weight, mask, n, ctx)
        grown = self.grow_fn(layer.weight, absent_before, n, ctx)
        return self.apply_change(layer, dropped, grown)

    @torch.no_grad()
    def rewire_groups(self, layer: MaskedLayer, grouping: Grouping, alpha: float) -> tuple[int, int]:
        """The rewiring of ``layer`` in whole groups (the module docstring); returns ``(dropped, grown)`` in weights.

        Per group size ``s``: with ``a_s`` fully present groups of that size, drop ``n_s = min(floor(alpha * a_s),
        absent_s)`` of them by the prune criterion and grow ``n_s`` among the ``absent_s`` groups of that size that
        were entirely absent before the drop, on live neurons only; the criteria see group sums
        (:meth:`group_context`).
        """
        mask = layer.mask
        present = grouping.all_of(mask)
        absent_before = grouping.none_of(mask) & grouping.all_of(layer.alive_synapse_slots())
        scores = grouping.reduce(layer.weight.detach().abs())
        ctx = self.group_context(layer, grouping)
        sizes = grouping.sizes(mask.device)
        dropped, grown = torch.zeros_like(present), torch.zeros_like(present)
        for size in torch.unique(sizes).tolist():  # one size, or two when the last block is shorter
            same = sizes == size
            n = min(math.floor(alpha * int((present & same).sum())), int((absent_before & same).sum()))
            if n > 0:
                dropped |= self.prune_fn(scores, present & same, n, ctx)
                grown |= self.grow_fn(scores, absent_before & same, n, ctx)
        if not bool(dropped.any()):
            return 0, 0
        return self.apply_change(layer, grouping.expand(dropped), grouping.expand(grown))

    @torch.no_grad()
    def apply_change(self, layer: MaskedLayer, dropped: torch.Tensor, grown: torch.Tensor) -> tuple[int, int]:
        """Set ``layer``'s mask to ``(mask & ~dropped) | grown`` (weight-shaped bool sets), report the change in
        :attr:`last_change`, start regrown weights at ``grow_init``; returns the sizes of both sets."""
        assert self.masks is not None
        self.last_change[layer.name] = LayerChange(dropped.clone(), grown.clone())
        new_mask = (layer.mask & ~dropped) | grown
        self.masks.set_mask(layer, new_mask)
        if self.grow_init != 0.0:
            layer.weight[grown] = self.grow_init
        return int(dropped.sum()), int(grown.sum())

    def rewire(self, alpha: float, at: int) -> bool:
        if alpha <= 0.0:
            return False
        changed = False
        self.last_change = {}
        record: dict[str, Any] = {"at": at, "alpha": alpha, "layers": {}}
        for layer in self.layers:
            grouping = self.grouping(layer)
            if grouping.is_identity:
                dropped, grown = self.rewire_layer(layer, math.floor(alpha * layer.active()))
            else:
                dropped, grown = self.rewire_groups(layer, grouping, alpha)
            record["layers"][layer.name] = {"dropped": dropped, "grown": grown}
            changed = changed or dropped > 0
        self.history.append(record)
        return changed

    # -- state ------------------------------------------------------------------------------------------------------
