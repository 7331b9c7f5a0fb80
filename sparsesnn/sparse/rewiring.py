"""Dynamic sparse training at a fixed density: prune a fraction of the active synapses, regrow as many elsewhere.

Every ``update_every`` optimiser steps (or epochs, with ``update_unit="epochs"``) and until ``stop_at`` of
training, each masked layer with ``a`` active synapses drops ``n = floor(alpha_t * a)`` of them by the prune
criterion and grows ``n`` among the synapses that were absent *before* the drop (so dropped and grown sets are
disjoint), by the grow criterion. The layer's density is unchanged. Regrown synapses start at ``grow_init`` (0) with
zero optimiser moments. ``alpha_t`` follows :func:`~sparsesnn.sparse.schedules.drop_fraction`.

An update at step (or epoch) ``t`` needs ``t < floor(stop_at * T)`` with ``stop_at <= 1``, so the last step (epoch)
of a run never rewires: no topology change follows the last optimiser step (the library's rule, docs/methods.md).

SET, RigL and ESL-SNN are this learner with different defaults.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparsesnn.sparse.criteria import GROW, PRUNE, CriterionContext
from sparsesnn.sparse.learner import LayerChange, ScheduleUnit, StructureLearner
from sparsesnn.sparse.masks import MaskedLayer
from sparsesnn.sparse.schedules import DROP_SCHEDULES, drop_fraction


class RewiringLearner(StructureLearner):
    """Prune-and-regrow at constant density (see the module docstring).

    Args (besides :class:`StructureLearner`'s):
        update_every: rewiring period, in steps or epochs (``update_unit``).
        drop_fraction: ``alpha_0``.
        schedule: "constant", "cosine" or "linear" decay of ``alpha``.
        stop_at: fraction of training after which the topology is frozen (``T_end``).
        prune: prune criterion name (:data:`~sparsesnn.sparse.criteria.PRUNE`).
        grow: grow criterion name (:data:`~sparsesnn.sparse.criteria.GROW`).
        grow_init: value of a regrown weight (0.0).
        momentum_beta: decay of the dense-gradient momentum used by ``grow="momentum"``.
    """

    name = "rewiring"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        update_every: int = 100,
        update_unit: str = "steps",
        drop_fraction: float = 0.3,
        schedule: str = "cosine",
        stop_at: float = 0.75,
        prune: str = "magnitude",
        grow: str = "gradient",
        grow_init: float = 0.0,
        momentum_beta: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        if update_unit not in ("steps", "epochs"):
            raise ValueError(f"update_unit must be 'steps' or 'epochs', got {update_unit!r}")
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction}")
        if schedule not in DROP_SCHEDULES:
            raise ValueError(f"schedule must be one of {DROP_SCHEDULES}, got {schedule!r}")
        if not 0.0 <= stop_at <= 1.0:
            raise ValueError(f"stop_at must be in [0, 1], got {stop_at}")
        if not 0.0 <= momentum_beta < 1.0:
            raise ValueError(f"momentum_beta must be in [0, 1), got {momentum_beta}")
        self.update_every = int(update_every)
        self.update_unit = update_unit
        self.alpha0 = float(drop_fraction)
        self.schedule = schedule
        self.stop_at = float(stop_at)
        self.prune_fn = PRUNE[prune]
        self.grow_fn = GROW[grow]
        self.prune_name, self.grow_name = prune, grow
        self.grow_init = float(grow_init)
        self.momentum_beta = float(momentum_beta)
        self.momentum: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, Any]] = []
        super().__init__(model, optimizer, **kwargs)

    # -- when -------------------------------------------------------------------------------------------------------
    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "epochs" if self.update_unit == "epochs" else "steps"

    def schedule_problem(self) -> str | None:
        unit = self.update_unit
        what = f"rewiring every {self.update_every} {unit} until stop_at = {self.stop_at} of the run"
        missing = self.budget_problem(what)
        if missing is not None:
            return missing
        if self.alpha0 <= 0.0:
            return "drop_fraction = 0 never rewires: give a drop_fraction > 0 (or use the static method)"
        end = self._end()
        if self.update_every >= end:
            total = self.total_epochs if unit == "epochs" else self.total_steps
            return (
                f"rewiring would never run: the first update is after {unit[:-1]} {self.update_every} (update_every) "
                f"but rewiring stops at {unit[:-1]} {end} (stop_at = {self.stop_at} of {total} {unit}); lower "
                "update_every, raise stop_at or train longer"
            )
        return None

    def _end(self) -> int:
        total = self.total_epochs if self.update_unit == "epochs" else self.total_steps
        return math.floor(self.stop_at * total) if total else 0

    def alpha(self, t: int) -> float:
        """The drop fraction at step/epoch ``t`` (0 once rewiring has stopped)."""
        return drop_fraction(self.schedule, self.alpha0, t, self._end())

    def is_update(self, t: int) -> bool:
        return t > 0 and t % self.update_every == 0 and t < self._end()

    def wants_dense_grad(self, step: int) -> bool:
        if self.grow_name == "momentum":
            return True
        return self.grow_name == "gradient" and self.update_unit == "steps" and self.is_update(step)

    # -- what -------------------------------------------------------------------------------------------------------
    def before_update(self) -> None:
        if self.grow_name == "momentum":
            self._update_momentum()

    def update(self) -> bool:
        if self.update_unit != "steps" or not self.is_update(self.steps):
            return False
        return self.rewire(self.alpha(self.steps), at=self.steps)

    def on_epoch_end(self, epoch: int) -> bool:
        self._note_epoch_end(epoch)
        if self.update_unit != "epochs" or self.masks is None or not self.is_update(epoch + 1):
            return False
        return self.rewire(self.alpha(epoch + 1), at=epoch + 1)

    @torch.no_grad()
    def _update_momentum(self) -> None:
        for name, grad in self._dense_grads.items():
            m = self.momentum.get(name)
            self.momentum[name] = grad.clone() if m is None else m.mul_(self.momentum_beta).add_(grad)

    def context(self, layer: MaskedLayer) -> CriterionContext:
        return CriterionContext(
            generator=self.generator,
            dense_grad=self._dense_grads.get(layer.name),
            momentum=self.momentum.get(layer.name),
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
        self.last_change[layer.name] = LayerChange(dropped.clone(), grown.clone())
        new_mask = (mask & ~dropped) | grown
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
            n = math.floor(alpha * layer.active())
            dropped, grown = self.rewire_layer(layer, n)
            record["layers"][layer.name] = {"dropped": dropped, "grown": grown}
            changed = changed or dropped > 0
        self.history.append(record)
        return changed

    # -- state ------------------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"momentum": {k: v.clone() for k, v in self.momentum.items()}, "history": list(self.history)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        devices = {layer.name: layer.weight.device for layer in self.layers}
        self.momentum = {k: v.to(devices[k], copy=True) for k, v in state["momentum"].items()}
        self.history = list(state["history"])
