"""LTH: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; for SNNs, Kim et al., ECCV 2022).

Training is split into ``rounds`` of equal length. The network starts dense; at the end of every round but the last,
each masked layer (``scope="layer"``) or all of them together (``scope="global"``) lose the ``prune_rate`` fraction
of their active weights with the smallest magnitude, the surviving weights are rewound to their values at the end
of epoch ``rewind_epoch`` (0 = initialisation), and the optimiser state is cleared. The engine restarts the LR
schedule every round (``cycle_epochs``). ``prune_rate`` defaults to the rate that reaches ``density`` after
``rounds - 1`` prunings: ``1 - density^(1/(rounds-1))`` (Kim et al. prune 25 % per round; pass ``prune_rate=0.25``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparsesnn.checkpoint import restore_like
from sparsesnn.sparse.criteria import pick_lowest
from sparsesnn.sparse.learner import ScheduleUnit, StructureLearner
from sparsesnn.sparse.methods.registry import METHODS


@METHODS.register("lth")
class LotteryTicket(StructureLearner):
    name = "lth"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        rounds: int = 5,
        prune_rate: float | None = None,
        rewind_epoch: int = 0,
        scope: str = "layer",
        **kwargs: Any,
    ) -> None:
        if rounds < 2:
            raise ValueError(f"rounds must be >= 2 (one pruning needs two rounds), got {rounds}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        if prune_rate is not None and not 0.0 < prune_rate < 1.0:
            raise ValueError(f"prune_rate must be in (0, 1), got {prune_rate}")
        self.rounds = int(rounds)
        self.scope = scope
        self.rewind_epoch = int(rewind_epoch)
        self.prune_rate_arg = prune_rate
        self.rewind_state: dict[str, torch.Tensor] = {}
        self.rounds_done = 0
        super().__init__(model, optimizer, initial_density=1.0, **kwargs)
        total_epochs = self.total_epochs
        if total_epochs % self.rounds:
            raise ValueError(f"run.epochs ({total_epochs}) must be a multiple of rounds ({self.rounds})")
        if not 0 <= self.rewind_epoch < total_epochs // self.rounds:
            raise ValueError(f"rewind_epoch must lie within the first round, got {rewind_epoch}")
        if self.rewind_epoch == 0:
            self._snapshot()

    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "epochs"

    def schedule_problem(self) -> str | None:
        return self.budget_problem(f"pruning and rewinding at the end of each of {self.rounds} rounds")

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
                n = math.floor(self.prune_rate * layer.active())
                self.masks.set_mask(layer, layer.mask & ~pick_lowest(layer.weight.abs(), layer.mask, n))
            return
        scores = torch.cat([layer.weight.abs().flatten() for layer in self.layers])
        active = torch.cat([layer.mask.flatten() for layer in self.layers])
        drop = pick_lowest(scores, active, math.floor(self.prune_rate * int(active.sum())))
        offset = 0
        for layer in self.layers:
            n = layer.numel()
            self.masks.set_mask(layer, layer.mask & ~drop[offset : offset + n].view_as(layer.mask))
            offset += n

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
