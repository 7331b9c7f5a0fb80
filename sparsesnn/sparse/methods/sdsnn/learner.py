"""The SD-SNN learner: the real topology it keeps, the epoch schedule of the three mechanisms, the rates, the
state saved in checkpoints, and its registration as ``sdsnn`` in :data:`~sparsesnn.sparse.methods.registry.METHODS`.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from sparsesnn.sparse.learner import ScheduleUnit, StructureLearner
from sparsesnn.sparse.masks import MaskedLayer, prunable_layers
from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.methods.sdsnn import ghosts, pruning, regeneration, spines
from sparsesnn.sparse.methods.sdsnn.settings import (
    CODE_LAST_SCALE,
    CODE_N,
    CODE_PERCENTILE_GROWTH,
    CODE_TAIL_EPOCH_AT_N18,
    CODE_TAIL_TOTAL,
    SDSNNSettings,
)
from sparsesnn.sparse.methods.sdsnn.tensors import is_conv
from sparsesnn.sparse.settings import LearnerSettings


@METHODS.register("sdsnn")
class SDSNN(StructureLearner):
    """SD-SNN: dendritic-spine ranges + constraint, neuronal pruning, synaptic regeneration (see the package docstring;
    settings: :class:`SDSNNSettings`)."""

    name = "sdsnn"
    Settings: ClassVar[type[LearnerSettings]] = SDSNNSettings

    def configure(self, settings: LearnerSettings) -> None:
        super().configure(settings)
        assert isinstance(settings, SDSNNSettings)
        s = settings
        self.N = s.N
        self.stop_at = s.stop_at
        self.final_change = s.final_change
        self.constraint = s.constraint
        self.neuron_pruning = s.neuron_pruning
        self.regeneration = s.regeneration
        self.range_layers = s.range_layers
        self.rho_init = s.rho_init
        self.last_rate_rule = s.last_rate_rule
        self.last_rho_init = s.last_rho_init
        tail = round(CODE_TAIL_EPOCH_AT_N18 * self.N / CODE_N) if s.last_tail_epoch is None else s.last_tail_epoch
        self.last_tail_epoch = int(tail)
        self._tail_increment = s.last_tail_increment
        self.rate_decay = s.rate_decay
        self.dead_conv_ratio = s.dead_conv_ratio
        self.dead_fc_ratio = s.dead_fc_ratio
        self.prune_dead = s.prune_dead
        self.conv_percentile = s.conv_percentile
        self.fc_percentile = s.fc_percentile
        growth = s.percentile_growth
        self.percentile_growth = CODE_PERCENTILE_GROWTH ** (CODE_N / self.N) if growth is None else growth
        self.percentile_cap = s.percentile_cap
        self.shrink = s.shrink

    def prepared(self) -> None:
        assert self.masks is not None
        order = prunable_layers(self.model)
        self._modules_by_name = dict(order)
        names = [n for n, _ in order]
        self.next_layer = {name: names[i + 1] for i, name in enumerate(names[:-1])}
        #: layers whose neurons may be pruned: every masked layer but the model's readout
        self.neuron_layers = [layer.name for layer in self.layers if layer.name != names[-1]]
        self.last_layer = self.neuron_layers[-1] if self.neuron_layers else self.layers[-1].name

        # the real topology (the code's codebook); the core's masks equal it at every epoch boundary
        self.structure = {layer.name: layer.mask.clone() for layer in self.layers}
        self.alive = {layer.name: layer.neuron_mask.clone() for layer in self.layers}
        self.ever_pruned = {layer.name: torch.zeros_like(layer.neuron_mask) for layer in self.layers}
        self.rho = {name: self._rho_start(name) for name in self.neuron_layers}
        self.ranges: dict[str, dict[str, torch.Tensor]] = {}  # name -> pos / neg, from epoch 0 on
        self.dynamics: dict[str, dict[str, torch.Tensor]] = {}  # name -> range counters (layers whose ranges move)
        self.regrowth: dict[str, dict[str, torch.Tensor]] = {}  # name -> count / prev, per kernel or synapse
        self.stash: dict[str, dict[str, torch.Tensor]] = {}  # name -> bias / BN values of pruned neurons
        self.ghost = False  # ghosts armed for the epoch in progress
        self.history: list[dict[str, Any]] = []

        first, needed = self._first_development()
        if (self.neuron_pruning or self.regeneration) and self.total_epochs < needed:
            warnings.warn(
                f"sdsnn: neuron pruning and regeneration start at the end of epoch 2N + 2 = {first} (1-based), so "
                f"they need a run of {needed} epochs, but the run has {self.total_epochs}; lower N",
                stacklevel=3,  # the caller of the constructor
            )

    # -- schedule ---------------------------------------------------------------------------------------------------
    @property
    def schedule_unit(self) -> ScheduleUnit:
        return "epochs"

    def _first_development(self) -> tuple[int, int]:
        """``(first, needed)``: the 1-based epoch whose end may first prune / regenerate (``2N + 2``), and the run
        length that lets it (one more epoch must follow unless ``final_change``)."""
        first = 2 * self.N + 2
        return first, first if self.final_change else first + 1

    def schedule_problem(self) -> str | None:
        if not (self.neuron_pruning or self.regeneration or self.constraint or self.range_layers != "none"):
            return None  # every mechanism off: a fixed topology, as the static method
        missing = self.budget_problem(f"development with N = {self.N} (ranges, constraint, pruning, regeneration)")
        if missing is not None:
            return missing
        first, needed = self._first_development()
        develops = (self.neuron_pruning or self.regeneration) and self.total_epochs >= needed
        constrains = self.constraint and self.total_epochs >= self.N + 2  # an epoch end e > N
        if (self.neuron_pruning or self.regeneration or self.constraint) and not (develops or constrains):
            return (
                f"nothing would ever run: the constraint starts at the end of epoch N + 2 = {self.N + 2} and pruning "
                f"and regeneration at the end of epoch 2N + 2 = {first} (1-based), but the run has "
                f"{self.total_epochs} epochs; lower N or train longer"
            )
        return None

    # -- helpers ----------------------------------------------------------------------------------------------------
    @property
    def last_tail_increment(self) -> float:
        """The "code" rule's factor after ``last_tail_epoch``: ``0.0005 * 538 / (L - 1 - last_tail_epoch)``.

        ``L`` is the last epoch that prunes, ``end - 2`` with ``end`` from :meth:`_develop_end` (``E - 2`` by
        default, ``E - 1`` with ``final_change``, ``floor(stop_at * E) - 2`` with ``stop_at``; 0-based). The
        increments of epochs ``last_tail_epoch + 1 .. L - 1`` reach a pruning step (that of ``L`` does not), so the
        run's last pruning uses the rate the code's uses at its epoch 599.
        """
        if self._tail_increment is not None:
            return self._tail_increment
        tail_epochs = self._develop_end() - 3 - self.last_tail_epoch  # L = end - 2
        return CODE_TAIL_TOTAL / tail_epochs if tail_epochs > 0 else 0.0

    def _develop_end(self) -> int:
        """Epoch ends ``e`` with ``e + 1 < end`` may prune: ``floor(stop_at * E)`` (the rewiring methods' rule),
        ``E`` without it (every epoch end but the last, the rule at ``stop_at = 1``), ``E + 1`` with
        ``final_change`` (every epoch end, the last included, as the code). Needs ``E`` (``total_epochs``)."""
        if self.stop_at is not None:
            return math.floor(self.stop_at * self.total_epochs)
        return self.total_epochs + 1 if self.final_change else self.total_epochs

    def develops(self, epoch: int) -> bool:
        """Whether neuron pruning and regeneration run at the end of (0-based) ``epoch``: ``e > 2N`` and
        ``e + 1 < end`` (:meth:`_develop_end`: not at the last epoch end unless ``final_change``; earlier with
        ``stop_at``)."""
        return epoch > 2 * self.N and epoch + 1 < self._develop_end()

    def _rho_start(self, name: str) -> float:
        if name == self.last_layer and self.last_rate_rule == "code":
            return self.last_rho_init
        return self.rho_init

    def _layer(self, name: str) -> MaskedLayer:
        assert self.masks is not None
        return self.masks.by_name()[name]

    def _moves(self, name: str) -> bool:
        return self.range_layers == "all" or (self.range_layers == "last" and name == self.last_layer)

    def dead_threshold(self, module: nn.Module) -> float:
        """Fewer surviving input synapses than this and a neuron counts as dead (``ratio * fan_in``)."""
        return pruning.dead_threshold(module.weight, self.dead_conv_ratio, self.dead_fc_ratio)

    def alive_count(self, name: str) -> int:
        """Neurons of layer ``name`` that are not pruned and keep at least the dead threshold of input synapses."""
        module = self._modules_by_name[name]
        threshold = self.dead_threshold(module)
        if name in self.structure:
            return pruning.alive_neurons(self.structure[name], self.alive[name], threshold)
        fan_in = module.weight[0].numel()
        return module.weight.shape[0] if fan_in >= threshold and fan_in > 0 else 0

    def regeneration_percentile(self, name: str, epoch: int) -> float:
        """``q_e = min(base + g^(e - 2N - 1), 99)``, base 65 for conv and 60 for FC, ``g = 1.1^(18/N)``."""
        base = self.conv_percentile if is_conv(self._layer(name).weight) else self.fc_percentile
        return regeneration.percentile_at(base, self.percentile_growth, self.percentile_cap, epoch - 2 * self.N - 1)

    @staticmethod
    def prune_count(n_out: int, rho: float) -> int:
        """How many of a layer's ``n_out`` neurons the rate ``rho`` prunes: ``floor(n_out * rho)``, never all."""
        return pruning.prune_count(n_out, rho)

    def rate_increment(self, name: str, epoch: int, alive: int, alive_next: int) -> float:
        """How much ``rho`` of layer ``name`` grows after its pruning at ``epoch`` (a fraction, not percent)."""
        k = epoch - 2 * self.N - 1
        ratio = alive / max(alive_next, 1)
        if name == self.last_layer and self.last_rate_rule == "code":
            factor = CODE_LAST_SCALE * math.exp(-k) if epoch <= self.last_tail_epoch else self.last_tail_increment
        else:
            factor = math.exp(-k / self.rate_decay)
        return factor * ratio / 100.0

    def ghost_slots(self, name: str) -> torch.Tensor:
        """Weight-shaped bool: the absent entries that may regrow (fully absent conv kernels, absent FC synapses)."""
        return ghosts.ghost_slots(self.structure[name])

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def step(self) -> bool:
        if self.regeneration and not self.ghost and self.ranges and self.develops(self.epochs_seen):
            self._arm_ghosts()
        return super().step()

    @torch.no_grad()
    def _arm_ghosts(self) -> None:
        """Widen the working masks to the regeneration candidates and bring pruned neurons' bias / BN back."""
        assert self.masks is not None
        for layer in self.layers:
            name = layer.name
            ghosts.widen(self.masks, layer, self.structure[name], self.alive[name], self.stash.get(name, {}))
        self.ghost = True

    @torch.no_grad()
    def _apply_structure(self) -> None:
        """Working masks back to the structure: ghosts, their moments and pruned neurons' bias / BN to zero."""
        assert self.masks is not None
        for layer in self.layers:
            name = layer.name
            ghosts.narrow(self.masks, layer, self.structure[name], self.alive[name], self.stash.setdefault(name, {}))
        self.ghost = False

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> bool:
        super().on_epoch_end(epoch)
        record: dict[str, Any] = {"epoch": epoch + 1}
        if epoch == 0 or not self.ranges:
            self._init_ranges()
        else:
            record["ranges_grown"], record["ranges_shrunk"] = self._range_dynamics()
        if self.constraint and epoch > self.N:
            record["clipped"] = self._constrain()
        changed = False
        if self.develops(epoch):
            if self.regeneration:
                record["regrown"] = self._regenerate(epoch)
                changed = changed or any(record["regrown"].values())
            if self.neuron_pruning:
                record["pruned"] = self._prune_neurons(epoch)
                record["rho"] = dict(self.rho)
                changed = changed or any(record["pruned"].values())
        self._apply_structure()
        self.history.append(record)
        return changed

    # -- 1. ranges and constraint (:mod:`.spines`) -----------------------------------------------------------------
    def _init_ranges(self) -> None:
        for layer in self.layers:
            w = layer.weight.detach() * self.structure[layer.name]
            self.ranges[layer.name] = spines.init_ranges(w)
            if self._moves(layer.name):
                self.dynamics[layer.name] = spines.init_dynamics(w)

    def _range_dynamics(self) -> tuple[int, int]:
        grown = shrunk = 0
        for layer in self.layers:
            d = self.dynamics.get(layer.name)
            if d is None:
                continue
            w = layer.weight.detach() * self.structure[layer.name]
            g, s = spines.move_ranges(w, self.ranges[layer.name], d, self.N, self.shrink)
            grown += g
            shrunk += s
        return grown, shrunk

    def _constrain(self) -> int:
        return sum(spines.constrain(layer.weight, self.ranges[layer.name]) for layer in self.layers)

    # -- 3. regeneration (:mod:`.regeneration`) ----------------------------------------------------------------------
    def _regenerate(self, epoch: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            name = layer.name
            s = self.structure[name]
            values, pruned = regeneration.candidate_values(layer.weight.detach(), s)
            state = self.regrowth.get(name)
            if state is None:
                state = self.regrowth[name] = regeneration.new_state(values)
            q = self.regeneration_percentile(name, epoch) if bool(pruned.any()) else None
            out[name] = regeneration.regrow(values, pruned, q, state, s, self.alive[name], self.N)
        return out

    # -- 2. neuronal pruning (:mod:`.pruning`) ----------------------------------------------------------------------
    def neuron_scores(self, name: str) -> torch.Tensor:
        """Sum over each neuron's fan-in of ``unit(r+ + |r-|) * M``, in float64 like the code's numpy arrays
        (:func:`.pruning.neuron_scores`: rows sharing their multiset of widths then tie as in the code)."""
        return pruning.neuron_scores(self.ranges[name], self.structure[name])

    def _prune_neurons(self, epoch: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.neuron_layers:  # in model order; each layer's rate is updated right after its pruning
            s = self.structure[name]
            count = self.prune_count(s.shape[0], self.rho[name])
            scores = self.neuron_scores(name) if count > 0 else None
            dead = None
            if self.prune_dead:
                dead = pruning.dead_neurons(s, self.dead_threshold(self._modules_by_name[name]))
            kill = pruning.select(scores, count, self.alive[name], self.ever_pruned[name], dead)
            s[kill] = False
            self.alive[name] &= ~kill
            self.ever_pruned[name] |= kill
            out[name] = int(kill.sum())
            alive, alive_next = self.alive_count(name), self.alive_count(self.next_layer[name])
            self.rho[name] += self.rate_increment(name, epoch, alive, alive_next)
        return out

    # -- teardown and reporting -------------------------------------------------------------------------------------
    def finalize(self) -> nn.Module:
        if self.masks is not None and self.ghost:
            self._apply_structure()
        return super().finalize()

    def density(self) -> float:
        """Active fraction of the real structure over the masked layers (ghost synapses not counted)."""
        total = sum(s.numel() for s in self.structure.values())
        return sum(int(s.sum()) for s in self.structure.values()) / total if total else 1.0

    def layer_table(self) -> list[dict[str, Any]]:
        rows = super().layer_table()
        for row in rows:
            s = self.structure.get(row["layer"])
            if s is None or self.masks is None:
                continue
            active = int(s.sum())
            alive = s.reshape(s.shape[0], -1).any(1) & self.alive[row["layer"]]
            row.update(active=active, density=active / s.numel(), neurons_alive=int(alive.sum()))
            if "macs" in row:
                row["live_macs"] = active * row["macs"] / row["total"]
        return rows

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["rho"] = dict(self.rho)
        m["neurons_pruned"] = {name: int((~self.alive[name]).sum()) for name in self.neuron_layers}
        return m

    # -- state ------------------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        def clone(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.clone() for k, v in d.items()}

        def clone2(d: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
            return {k: clone(v) for k, v in d.items()}

        return {
            "structure": clone(self.structure),
            "alive": clone(self.alive),
            "ever_pruned": clone(self.ever_pruned),
            "rho": dict(self.rho),
            "ranges": clone2(self.ranges),
            "dynamics": clone2(self.dynamics),
            "regrowth": clone2(self.regrowth),
            "stash": clone2(self.stash),
            "ghost": self.ghost,
            "history": copy.deepcopy(self.history),
            "final_change": self.final_change,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        devices = {layer.name: layer.weight.device for layer in self.layers}
        if set(state["structure"]) != set(devices):
            raise ValueError(f"sdsnn state is for layers {sorted(state['structure'])}, not {sorted(devices)}")

        def load(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(devices[k]).clone() for k, v in d.items()}

        def load2(d: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
            return {k: {kk: vv.to(devices[k]).clone() for kk, vv in v.items()} for k, v in d.items()}

        self.structure = load(state["structure"])
        self.alive = load(state["alive"])
        self.ever_pruned = load(state["ever_pruned"])
        self.rho = {k: float(v) for k, v in state["rho"].items()}
        self.ranges = load2(state["ranges"])
        self.dynamics = load2(state["dynamics"])
        self.regrowth = load2(state["regrowth"])
        self.stash = load2(state["stash"])
        self.ghost = bool(state["ghost"])
        self.history = copy.deepcopy(state["history"])
        if "final_change" not in state and not self.final_change and self.epochs_seen < self.total_epochs:
            # a run started before the rule: it pruned at every epoch end and its late rate assumed the last one
            warnings.warn(
                "sdsnn: this checkpoint predates the rule that no structural change follows the last optimiser step; "
                "the rest of the run follows it (no pruning or regeneration at the end of the last epoch, the late "
                "rate spread over the epochs that still prune), so it is neither the old schedule nor a new run's",
                stacklevel=2,
            )
