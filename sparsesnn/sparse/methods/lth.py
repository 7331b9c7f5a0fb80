"""LTH: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; for SNNs, Kim et al., ECCV 2022).

Training is split into ``rounds`` of equal length. The network starts dense; at the end of every round but the last,
each masked layer (``scope="layer"``) or all of them together (``scope="global"``) lose the ``prune_rate`` fraction
of their active weights with the smallest magnitude, the surviving weights are rewound to their values at the end
of epoch ``rewind_epoch`` (0 = initialisation), and the optimiser state is cleared. The engine restarts the LR
schedule every round (``cycle_epochs``). ``prune_rate`` defaults to the rate that reaches ``density`` after
``rounds - 1`` prunings: ``1 - density^(1/(rounds-1))`` (Kim et al. prune 25 % per round; pass ``prune_rate=0.25``).

At a coarse ``granularity`` (:mod:`sparsesnn.sparse.granularity`, ``scope="layer"`` only) each layer with ``a``
fully present groups loses the ``floor(prune_rate * a)`` groups of smallest ``sum |w|`` (L1 norm). The ``global``
scope would rank groups of different sizes across layers against each other and is refused there.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from sparsesnn.core.state import restore_like
from sparsesnn.sparse.criteria import pick_lowest
from sparsesnn.sparse.learner import ScheduleUnit, StructureLearner
from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.settings import LearnerSettings


class LTHSettings(LearnerSettings):
    """Iterative magnitude pruning with rewinding, over ``rounds`` equal rounds of training."""

    rounds: int = Field(5, ge=2, description="rounds of training (one pruning needs two); run.epochs is a multiple")
    prune_rate: float | None = Field(
        None, gt=0.0, lt=1.0, description="fraction pruned per round; None: what reaches density after rounds - 1"
    )
    rewind_epoch: int = Field(0, ge=0, description="rewind survivors to the end of this epoch (0: initialisation)")
    scope: Literal["layer", "global"] = Field("layer", description="prune each layer, or all layers together")

    @model_validator(mode="after")
    def _global_needs_weights(self) -> LTHSettings:
        if self.scope == "global" and self.granularity != "weight":
            raise ValueError(
                f"scope = 'global' ranks single weights across layers; at granularity = {self.granularity!r} the "
                "groups of different layers differ in size: use scope = 'layer', or granularity = 'weight'"
            )
        return self


@METHODS.register("lth")
class LotteryTicket(StructureLearner):
    name = "lth"
    Settings: ClassVar[type[LearnerSettings]] = LTHSettings
    starts_dense = True

    def prepared(self) -> None:
        if self.rewind_epoch == 0:
            self._snapshot()

    def configure(self, settings: LearnerSettings) -> None:
        super().configure(settings)
        assert isinstance(settings, LTHSettings)
        self.rounds = settings.rounds
        self.scope = settings.scope
        self.rewind_epoch = settings.rewind_epoch
        self.prune_rate_arg = settings.prune_rate
        self.rewind_state: dict[str, torch.Tensor] = {}
        self.rounds_done = 0

    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "epochs"

    def schedule_problem(self) -> str | None:
        missing = self.budget_problem(f"pruning and rewinding at the end of each of {self.rounds} rounds")
        if missing is not None:
            return missing
        if self.total_epochs % self.rounds:
            return f"run.epochs ({self.total_epochs}) must be a multiple of rounds ({self.rounds})"
        if not self.rewind_epoch < self.total_epochs // self.rounds:
            return f"rewind_epoch must lie within the first round, got {self.rewind_epoch}"
        return None

    @property
    def prune_rate(self) -> float:
        if self.prune_rate_arg is not None:
            return self.prune_rate_arg
        return 1.0 - self.density_target ** (1.0 / (self.rounds - 1))

    @property
    def cycle_epochs(self) -> int:
        """Epochs per round: the engine restarts the LR schedule with this period."""
        return self.total_epochs // self.rounds

    def _snapshot(self) -> None:
        self.rewind_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_epoch_end(self, epoch: int) -> bool:
        self._note_epoch_end(epoch)
        done = epoch + 1
        if self.rounds_done == 0 and done == self.rewind_epoch and self.rewind_epoch > 0:
            self._snapshot()
        if done % self.cycle_epochs or self.rounds_done >= self.rounds - 1 or done >= self.total_epochs:
            return False
        self._prune()
        self._rewind()
        self.rounds_done += 1
        return True

    @torch.no_grad()
    def _prune(self) -> None:
        assert self.masks is not None
        if self.scope == "layer":
            for layer in self.layers:
                grouping = self.grouping(layer)  # single weights by default: reduce and expand are the identity
                present = grouping.all_of(layer.mask)
                n = math.floor(self.prune_rate * int(present.sum()))
                dropped = pick_lowest(grouping.reduce(layer.weight.abs()), present, n)
                self.masks.set_mask(layer, layer.mask & ~grouping.expand(dropped))
            return
        scores = torch.cat([layer.weight.abs().flatten() for layer in self.layers])
        active = torch.cat([layer.mask.flatten() for layer in self.layers])
        if self.budget == "macs":
            drop = self._lowest_by_cost(scores, active)
        else:
            drop = pick_lowest(scores, active, math.floor(self.prune_rate * int(active.sum())))
        offset = 0
        for layer in self.layers:
            n = layer.numel()
            self.masks.set_mask(layer, layer.mask & ~drop[offset : offset + n].view_as(layer.mask))
            offset += n

    def _lowest_by_cost(self, scores: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The MAC budget's global prune: the active weights of lowest ``|w|``, taken in that order while the MACs
        they remove (each weight costs its layer's uses per sample) stay within ``prune_rate`` of the active MACs."""
        cost = torch.cat(
            [torch.full((layer.numel(),), c / layer.numel(), device=scores.device)
             for layer, c in zip(self.layers, self.layer_costs, strict=True)]
        )  # fmt: skip
        idx = torch.nonzero(active).flatten()
        order = idx[torch.argsort(scores[idx], stable=True)]
        budget = self.prune_rate * float(cost[idx].sum())
        n = int((torch.cumsum(cost[order].double(), 0) <= budget).sum())
        drop = torch.zeros_like(active)
        drop[order[:n]] = True
        return drop

    @torch.no_grad()
    def _rewind(self) -> None:
        """Surviving weights (and every other parameter and buffer) go back to the rewind point; masks stay."""
        assert self.masks is not None
        current = self.model.state_dict()
        for key, value in self.rewind_state.items():
            if key.endswith(("weight_mask", "neuron_mask")):
                continue
            current[key].copy_(value)
        self.masks.apply()
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def extra_state(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind_state, "rounds_done": self.rounds_done}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        live = self.model.state_dict()
        self.rewind_state = {k: restore_like(v, live[k]) for k, v in state["rewind_state"].items()}
        self.rounds_done = int(state["rounds_done"])
