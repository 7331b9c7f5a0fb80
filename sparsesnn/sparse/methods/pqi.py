"""Compression-efficiency two-stage structure learning (Shen, Xu, Pan, Chen — ICLR 2025, arXiv 2502.13572).

The network is sparse from scratch (an ER topology at ``density``, 0.5 in our recipes) and trains by
surrogate-gradient BPTT. Every ``epoch_frequency`` epochs a round runs on every masked layer:

- **Stage I** measures how compressible each unit is. A unit is one output neuron's fan-in (``scope = "neuron"``)
  or the whole layer (``scope = "layer"``). With ``d`` active weights and PQ index ``I`` (Diao et al., ICLR 2023;
  :mod:`sparsesnn.sparse.pqindex`), the retained-weight bound is
  ``r = ceil(d (1 + a_r)^(-q/(q-p)) (1 - I)^(qp/(q-p)))`` and the unit's rewiring ratio
  ``c = clamp(gamma (1 - r/d), 0, beta)``.
- **Stage II** prunes the ``floor(c d)`` active weights of smallest ``|w|`` in the unit and regrows
  ``floor(regrow_ratio * pruned)`` of the unit's absent synapses (absent *before* the prune, so the two sets are
  disjoint; never into a pruned neuron) with the largest ``|m|``, ``m`` a momentum of dense gradients
  (``m <- momentum_beta * m + g``, every step; the machinery of
  :class:`~sparsesnn.sparse.rewiring.RewiringLearner`). Regrown weights start at ``grow_init`` (0) with zero moments.

So the pruning ratio is measured from the weights rather than fixed, and because only part of what is pruned
regrows the density ratchets down: ``density`` is the *initial* density, the final one is found by the method.
A unit stops shrinking when the PQ bound calls it incompressible: ``r = d`` gives ``c = 0``, and so does
``c < min_ratio`` (an option, 0 by default), and ``floor(c d) = 0`` prunes nothing. Rounds also stop after
``max_rounds`` rounds (0 = no limit) and from ``stop_at`` of the training epochs on (1.0: a round after every
``epoch_frequency``-th epoch except the last one, whose pruned weights could not recover).

At a coarse ``granularity`` (:mod:`sparsesnn.sparse.granularity`) a round runs on whole groups: each group is one
entry of its unit, its value the group's L1 norm ``sum |w|`` (so ``d`` counts the unit's present groups, ``I`` and
``r`` are over group norms, and ``floor(c d)`` groups go); the prune drops the groups of smallest norm, growth
regrows ``floor(regrow_ratio * pruned)`` groups that were entirely absent before the prune, on live neurons only,
with the largest ``sum |m|``. A unit is a row of the group-shaped tensor: with ``scope = "neuron"`` at ``kernel``
granularity one output neuron's kernels, at ``block`` granularity one output block's fan-in (the ``block_size``
neurons of the block share their groups, so they are one unit; a shorter last block is a unit of its own);
``tap`` groups span every output, so ``tap`` needs ``scope = "layer"`` (refused with ``"neuron"``). With
``scope = "layer"`` and a shorter last block, the short blocks' smaller sums make them pruned first.

What the paper fixes [V]: the two stages, the PQ index, sparse from scratch, neuron-wise and layer-wise scopes;
``a_r = 0.001`` [S]. What we decided [D] (docs/methods.md, the PQ index): ``p = 0.5``, ``q = 1``, ``gamma = 1.2``,
``beta = 0.9`` (Diao's defaults), ER start at 50 %, a round every epoch, ``regrow_ratio = 0.5`` (the paper prunes
and regrows "the same fraction", yet reports the density falling from 0.5 to about 0.11 over 10 rounds; regrowing
half of what is pruned reproduces a falling density), neuron scope by default, first and last layer dense (as ESL-SNN,
the same group's earlier method). Diao's code rounds the bound up (``ceil``); we follow the code, not the paper text.

Every round appends a record to :attr:`history` (it survives resume) with, per layer: ``pq`` (the PQ index; the mean
over units with active weights for the neuron scope), ``bound`` (the retained-weight bound ``r``, summed over
units), ``ratio`` (``c``, mean over units), ``active_before``, ``pruned``, ``regrown``, ``active`` and ``density``
after the round. :meth:`metrics` puts the latest round into every ``metrics.jsonl`` line under ``pqi``, so the
density trajectory can be plotted from that file alone.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from sparsesnn.sparse.learner import LayerChange, ScheduleUnit, StructureLearner
from sparsesnn.sparse.masks import MaskedLayer
from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.momentum import MomentumGrowthState
from sparsesnn.sparse.pqindex import SCOPES, check_pq, prune_counts, unit_rows, unit_stats
from sparsesnn.sparse.schedules import PeriodicSchedule
from sparsesnn.sparse.settings import LearnerSettings


class PQISettings(LearnerSettings):
    """The PQ-index two-stage rounds. The prune (magnitude), growth (momentum) and timing (epoch rounds) are fixed by
    the method, so the rewiring settings of RigL and SET are not among these."""

    density: float = Field(0.5, gt=0.0, le=1.0, description="the initial density (the method finds the final one)")
    distribution: Literal["uniform", "er", "erk"] = Field("er", description="how the density is spread over layers")
    dense_first: bool = Field(True, description="keep the first Conv/Linear dense")
    dense_last: bool = Field(True, description="keep the last Conv/Linear dense")
    p: float = Field(0.5, gt=0.0, description="PQ index p (0 < p < q)")
    q: float = Field(1.0, gt=0.0, description="PQ index q")
    a_r: float = Field(0.001, ge=0.0, description="a_r of the retained-weight bound")
    gamma: float = Field(1.2, gt=0.0, description="gamma: scale of the rewiring ratio")
    beta: float = Field(0.9, ge=0.0, le=1.0, description="beta: cap of the rewiring ratio")
    regrow_ratio: float = Field(0.5, ge=0.0, le=1.0, description="fraction of the pruned synapses regrown")
    scope: Literal[SCOPES] = Field("neuron", description="unit of a round: one neuron's fan-in, or the layer")  # type: ignore[valid-type]
    epoch_frequency: int = Field(1, ge=1, description="a round every this many epochs")
    stop_at: float = Field(1.0, ge=0.0, le=1.0, description="fraction of the epochs after which no round runs")
    max_rounds: int = Field(0, ge=0, description="at most this many rounds (0: no limit)")
    min_ratio: float = Field(0.0, ge=0.0, le=1.0, description="a unit whose ratio is below this is not rewired")
    grow_init: float = Field(0.0, description="value of a regrown weight")
    momentum_beta: float = Field(0.9, ge=0.0, lt=1.0, description="decay of the dense-gradient momentum")

    @model_validator(mode="after")
    def _pq(self) -> PQISettings:
        check_pq(self.p, self.q)
        if self.granularity == "tap" and self.scope == "neuron":
            raise ValueError(
                "scope = 'neuron' with granularity = 'tap': a tap group spans every output neuron, so no unit is one "
                "neuron's fan-in; use scope = 'layer', or granularity = 'block' or 'kernel'"
            )
        return self


def pick_per_row(scores: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor, lowest: bool) -> torch.Tensor:
    """Bool mask choosing, in every row, the ``counts[i]`` candidates with the lowest (or highest) score.

    ``scores`` and ``candidates`` are ``[rows, cols]``; ties go to the earlier position. ``counts[i]`` must not
    exceed the candidates of row ``i``.
    """
    if bool((counts > candidates.sum(1)).any()):
        raise ValueError("asked to pick more synapses in a row than it has candidates")
    key = scores.to(torch.float64) if lowest else -scores.to(torch.float64)
    key = torch.where(candidates, key, torch.full_like(key, float("inf")))
    order = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(key.shape[1], device=key.device).expand_as(order).contiguous())
    return (ranks < counts.to(ranks.device).view(-1, 1)) & candidates


@METHODS.register("pqi")
class PQIndexLearner(MomentumGrowthState, StructureLearner):
    """Two-stage PQ-index rewiring with a density that falls round by round (see the module docstring).

    Args (besides :class:`~sparsesnn.sparse.learner.StructureLearner`'s; ``density`` is the initial density):
        p, q: the PQ index norms, ``0 < p < q``.
        a_r: the bound's tolerance (Diao's ``eta_m``).
        gamma, beta: ``c = clamp(gamma (1 - r/d), 0, beta)``.
        regrow_ratio: fraction of the pruned synapses of a unit that regrow (by momentum), in ``[0, 1]``.
        scope: "neuron" (a unit is an output neuron's fan-in; at a coarse granularity a row of groups, see the
            module docstring) or "layer" (the whole layer).
        epoch_frequency: a round after every this many epochs.
        stop_at: fraction of the training epochs from which no round runs.
        max_rounds: at most this many rounds (0 = no limit).
        min_ratio: a unit whose ``c`` is below this counts as incompressible and is left alone.
        grow_init: value of a regrown weight (0.0).
        momentum_beta: decay of the dense-gradient momentum that ranks growth candidates.

    Composed of a :class:`~sparsesnn.sparse.schedules.PeriodicSchedule` (a round every ``epoch_frequency`` epochs
    until ``stop_at``: when) and a :class:`~sparsesnn.sparse.momentum.GradientMomentum` (what grows), with its own
    per-unit prune and regrowth (the two stages).
    """

    name = "pqi"
    Settings: ClassVar[type[LearnerSettings]] = PQISettings

    def configure(self, settings: LearnerSettings) -> None:
        super().configure(settings)
        assert isinstance(settings, PQISettings)
        s = settings
        self.p, self.q, self.a_r = s.p, s.q, s.a_r
        self.gamma, self.beta = s.gamma, s.beta
        self.regrow_ratio = s.regrow_ratio
        self.scope = s.scope
        self.epoch_frequency = s.epoch_frequency
        self.max_rounds = s.max_rounds
        self.min_ratio = s.min_ratio
        self.stop_at = s.stop_at
        self.grow_init = s.grow_init
        self.timing = PeriodicSchedule(s.epoch_frequency, "epochs", s.stop_at)
        self.init_growth_state(s.momentum_beta)

    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "epochs"

    def schedule_problem(self) -> str | None:
        what = f"a PQ-index round every {self.epoch_frequency} epoch(s) until stop_at = {self.stop_at} of the run"
        missing = self.budget_problem(what)
        if missing is not None:
            return missing
        return self.timing.never_fires(self.total_epochs, "PQ-index rounds", "epoch_frequency")

    def is_update(self, t: int) -> bool:
        return self.timing.is_update(t, self.total_epochs)

    def wants_dense_grad(self, step: int) -> bool:
        return True  # the momentum of growth accumulates every step

    def before_update(self) -> None:
        self.tracker.accumulate(self._dense_grads)

    @property
    def rounds_done(self) -> int:
        return len(self.history)

    def is_round(self, t: int) -> bool:
        """Whether a round runs after epoch ``t`` (1-based)."""
        return self.is_update(t) and not (self.max_rounds and self.rounds_done >= self.max_rounds)

    def on_epoch_end(self, epoch: int) -> bool:
        self._note_epoch_end(epoch)
        if self.masks is None or not self.is_round(epoch + 1):
            return False
        return self.run_round(at=epoch + 1)

    # -- the two stages ---------------------------------------------------------------------------------------------
    def stage_one(self, layer: MaskedLayer) -> dict[str, torch.Tensor]:
        """Per unit of ``layer``: ``d``, PQ ``index``, ``bound``, ``ratio`` (after ``min_ratio``) and ``n_prune``;
        the entries of a unit are its groups' L1 norms (single ``|w|`` at ``weight`` granularity), ``d`` and
        ``n_prune`` count groups."""
        grouping = self.grouping(layer)
        norms = grouping.reduce(layer.weight.detach().abs())
        present = grouping.all_of(layer.mask)
        stats = unit_stats(norms, present, self.scope, self.p, self.q, self.a_r, self.gamma, self.beta)
        if self.min_ratio > 0:
            ratio = stats["ratio"]
            stats["ratio"] = torch.where(ratio < self.min_ratio, torch.zeros_like(ratio), ratio)
            stats["n_prune"] = prune_counts(stats["ratio"], stats["d"])
        return stats

    @torch.no_grad()
    def stage_two(self, layer: MaskedLayer, n_prune: torch.Tensor) -> tuple[int, int]:
        """Prune the ``n_prune[i]`` groups of smallest L1 norm (single ``|w|`` at ``weight`` granularity) of unit
        ``i``; regrow ``floor(regrow_ratio * pruned)`` entirely absent groups of the unit by ``sum |m|``. Returns
        ``(pruned, regrown)`` in weights."""
        assert self.masks is not None
        mask = layer.mask
        grouping = self.grouping(layer)
        rows = unit_rows(grouping.all_of(mask), self.scope)
        absent = grouping.none_of(mask) & grouping.all_of(layer.alive_synapse_slots())  # never into a pruned neuron
        absent_before = unit_rows(absent, self.scope)
        n_prune = n_prune.to(mask.device)
        n_grow = torch.minimum(torch.floor(self.regrow_ratio * n_prune.double()).long(), absent_before.sum(1))
        if int(n_prune.sum()) == 0:
            return 0, 0
        norms = unit_rows(grouping.reduce(layer.weight.detach().abs()), self.scope)
        dropped = pick_per_row(norms, rows, n_prune, lowest=True)
        grown = torch.zeros_like(rows)
        if int(n_grow.sum()) > 0:
            momentum = self.momentum.get(layer.name)
            if momentum is None:
                raise RuntimeError(f"momentum growth needs a dense-gradient momentum for {layer.name}; none is tracked")
            grown = pick_per_row(unit_rows(grouping.reduce(momentum.abs()), self.scope), absent_before, n_grow, False)
        dropped_w = grouping.expand(dropped.view(grouping.group_shape))
        grown_w = grouping.expand(grown.view(grouping.group_shape))
        self.last_change[layer.name] = LayerChange(dropped_w, grown_w)  # expand returns new tensors
        self.masks.set_mask(layer, (mask & ~dropped_w) | grown_w)
        if self.grow_init != 0.0:
            layer.weight[grown_w] = self.grow_init
        return int(dropped_w.sum()), int(grown_w.sum())

    def run_round(self, at: int) -> bool:
        """Stage I and II on every masked layer; appends the round's record to :attr:`history`."""
        record: dict[str, Any] = {"round": self.rounds_done + 1, "at": at, "layers": {}}
        changed = False
        self.last_change = {}
        for layer in self.layers:
            stats = self.stage_one(layer)
            units = stats["d"] > 0
            n_units = max(int(units.sum()), 1)
            active_before = layer.active()
            pruned, regrown = self.stage_two(layer, stats["n_prune"])
            changed = changed or pruned > 0 or regrown > 0
            record["layers"][layer.name] = {
                "pq": float(stats["index"][units].sum()) / n_units,
                "bound": int(stats["bound"].sum()),
                "ratio": float(stats["ratio"][units].sum()) / n_units,
                "active_before": active_before,
                "pruned": pruned,
                "regrown": regrown,
                "active": layer.active(),
                "density": layer.active() / layer.numel(),
            }
        self.history.append(record)
        return changed

    # -- reporting --------------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """The base metrics plus ``pqi_rounds`` and ``pqi``: the latest round (``at`` epoch, per-layer values)."""
        out = super().metrics()
        last = self.history[-1] if self.history else None
        out["pqi_rounds"] = self.rounds_done
        out["pqi"] = {"at": last["at"], "layers": last["layers"]} if last is not None else {}
        return out
