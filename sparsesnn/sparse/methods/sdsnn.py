"""SD-SNN (Han, Zhao, Zeng, Pan — arXiv 2211.12219; Information Sciences 2025): adaptive structure development.

One learner, three mechanisms that can each be switched off, run once per **epoch** (``on_epoch_end(e)``, ``e``
counting from 0 as in the authors' loop), with ``N`` (``N = 18`` in the code, ``spines_num``) the epoch constant:

1. **Dendritic-spine ranges and the synaptic constraint** (``range_layers``, ``constraint``). At ``e = 0`` every
   synapse of a layer gets the range ``r+ = max(W_layer)``, ``r- = -max(W_layer)``. From ``e = 1`` on, on the
   masked weights ``W * M``: a synapse with ``w >= r+`` at this epoch *and* the previous one adds 1 to ``n+`` and
   ``w - r+`` to ``s+`` (otherwise both restart at 0); at ``n+ >= N``, ``r+ += s+ / N`` and the counters restart.
   The mirror (``w <= r-``, ``n-``, ``s-``) moves ``r-``. A synapse with ``|w|`` smaller than at the previous epoch,
   at this epoch and the previous one, adds 1 to ``n0``; at ``n0 >= N``, ``r+ *= 0.75`` and ``r- *= 0.75``
   (``shrink``). So a range moves after ``N + 1`` epochs running beyond it. For ``e > N`` the constraint clips every
   weight into its range, ``w = max(min(w, r+), r-)`` (the code's order).
2. **Neuronal pruning with the adaptive (neurotrophic) rate** (``neuron_pruning``), for ``e > 2N``. A neuron's
   score is the sum over its fan-in of the min-max-normalised range width ``unit(r+ + |r-|) * M`` (``unit`` over
   the whole layer; 0.5 everywhere when all widths are equal). The ``floor(rho_l * n_l)`` lowest-scoring neurons of
   the layer (already pruned ones included: they score lowest) are the pruned set, so ``rho_l`` is the layer's
   cumulative target; the ones among them that were never pruned before are pruned now (stable sort: ties go to the
   lower index). Right after a layer is pruned its rate moves, in percentage points as in the code:
   ``rho_l += exp(-(e - 2N - 1) / 5) * alive_l / alive_{l+1} / 100`` from ``rho_l = 0.5 %``; ``alive`` counts the
   neurons with at least ``threshold`` surviving input synapses, and ``alive_{l+1}`` is read before layer ``l+1``
   is pruned in the same epoch (the code walks the layers in order).
3. **Synaptic regeneration** (``regeneration``), for ``e > 2N``, before the pruning of that epoch. Pruned synapses
   keep learning during the epoch (see "ghost synapses" below). A conv *kernel* (all of its ``k*k`` entries absent)
   or an FC *synapse* is a candidate when its re-learned value — the signed sum of the kernel, or the weight —
   exceeds the percentile ``q_e = min(65 + 1.1^(e - 2N - 1), 99)`` (FC: ``60 + ...``) of the same values over the
   whole layer, live ones included. A candidate at this check *and* the previous one adds 1 to its counter
   (otherwise 0); when the counter exceeds ``N`` (the code's strict ``>``) the kernel / synapse is regrown with its
   re-learned value: ``N + 2`` epochs running above the percentile. A regrown kernel of a pruned neuron revives
   that neuron (with only the regrown kernels); a neuron once pruned is never pruned again by the rate (the
   code's ``his_prun``), though it counts towards the lowest-scoring set.

Ghost synapses ("masked weights keep learning during the epoch and are re-zeroed at its end"): the learner keeps
the real topology itself (``structure``, ``alive``: the authors' ``codebook``). With regeneration on, from the first
optimiser step of every epoch that ends with a regeneration check (``e > 2N``), the *working* masks of the core
(``weight_mask``, ``neuron_mask``) are widened to ``structure`` plus the regeneration candidates' slots (every
entry of a fully absent conv kernel, every absent FC synapse; pruned neurons become live): they get gradients and
optimiser updates from 0, and the pruned neurons' bias and BatchNorm ``gamma``/``beta`` are restored from a stash so
that gradients reach their synapses. ``on_epoch_end`` reads the re-learned values, updates the structure, and sets the
working masks back to it, which re-zeroes the ghosts, their optimiser moments and the pruned neurons' bias/BN (after
stashing those); a neuron revived by regeneration gets its stashed values back. At every epoch boundary, therefore,
the working masks *are* the structure: evaluation, checkpoints written there, the engine's topology digests and
``shrink.compact`` see the real network. ``density()`` and ``layer_table()`` always report the
structure, also in mid-epoch. With regeneration off there are no ghosts: pruned stays pruned.

Where we differ from the released code (BrainCog ``examples/Structural_Development/SD-SNN``: ``main.py``,
``prun_and_generation.py``, ``utils.py``, ``snn_model.py``), each a config option where it is a choice:

* Range dynamics run on every masked layer (``range_layers = "all"``, the paper's intent); the code runs them on its
  large FC only (``"last"``: the last neuron-pruned layer; the others keep their ``e = 0`` ranges, which are still
  clipped to and scored by), ``"none"`` freezes every range.
* Constants tied to the code's CIFAR net are derived: 37 is ``2N + 1``; 512 and 10 in the FC's rate are the alive
  counts of the layer and of the next one; the dead-neuron thresholds 20 (conv) and 50 (FC) surviving inputs become
  ``dead_conv_ratio * fan_in`` and ``dead_fc_ratio * fan_in`` with ratios 20/2304 and 50/32768, which reproduce 20
  for the convs with 256 input channels (fan-in 2304) and 50 for the 32768-input FC of the code's net (its convs
  with 128 input channels get 10, the one with 512 gets 40, the RGB conv 0.23: only an empty neuron is dead). A
  neuron with no input is always dead.
  As in the code, the thresholds only decide what ``alive`` counts in the rate; ``prune_dead = True`` also prunes
  such neurons (our option).
* The rate of the **last neuron-pruned layer** (the code's FC before the readout, where ``alive_l / alive_{l+1}`` is
  about 51) follows the code's FC schedule by default (``last_rate_rule = "code"``): ``rho`` starts at 2 %
  (``last_rho_init``), ``rho += 0.5 exp(-(e - 2N - 1)) * alive_l / alive_{l+1}`` percentage points up to epoch
  ``last_tail_epoch`` (the code's 60, here ``round(60 N / 18)`` unless given) and ``t * alive_l / alive_{l+1}``
  after it. The code's tail ``t = 0.0005`` runs for its epochs 61-599, and the 538 increments of epochs 61-598
  reach a pruning step (the rate grows after each pruning; the last increment is never used): ``0.269 * 51`` = 13.7
  points, which take the FC from the ~36 % where the exponential part saturates to the ~50 % of the paper's headline.
  A shorter run gets the same total over its own tail (``last_tail_increment = None``:
  ``t = 0.0005 * 538 / (E - 2 - last_tail_epoch)`` for a run of ``E`` epochs, the code's 0.0005 at ``E = 600,
  N = 18``), so that its last pruning uses the code's final rate; giving ``last_tail_increment = 0.0005`` keeps the
  code's per-epoch value at any length. A run too short to have a tail (``E - 2 <= last_tail_epoch``) has none.
  On a 512-10 head the code's total stops near 45 % of the neurons at any budget; any other value is a schedule of
  one's own, not the paper's (0.03 over 30 epochs, ``N = 3``, prunes 51.7 % of the MNIST convnet: BENCHMARKS.md).
  ``"formula"`` applies the general formula to it too, which with a 10-class readout reaches 100 % in a few
  epochs. At most ``n_l - 1`` neurons of a layer are ever pruned.
* The regeneration percentile ``q_e = min(base + 1.1^(e - 2N - 1), 99)`` climbs from ~61 to its cap 99 in 37
  epochs, about 2N of the code's ``N = 18``, so that the code's run spends 94 % of its pruning epochs (74-599) at
  99: a pruned synapse comes back only if it re-learns a top-1 % value. With ``1.1`` kept, a 15-epoch run with
  ``N = 2`` would end at ``q = 62.4``, and regeneration would undo most of the pruning (measured: 185 of 512 FC
  neurons pruned at epoch 9, 1 at epoch 15). The growth is therefore an epoch constant scaled like ``2N + 1`` and
  ``60``: ``percentile_growth = 1.1^(18 / N)`` (2.36 for ``N = 2``: 61, 62.4, 65.6, 73.1, 90.9, then 99), the
  code's 1.1 at ``N = 18``. The rate decays (``exp(-k / 5)``, the FC's ``exp(-k)``) are kept: what they set is a
  total that a short run already almost collects (``sum exp(-k / 5)`` over 9 epochs is 4.1 of the code's 5.5).
* A pruned neuron here has zero bias and zero BatchNorm ``gamma``/``beta`` (the core's neuron mask), so that its
  input is exactly 0 and :func:`~sparsesnn.sparse.shrink.compact` can remove it; the code zeroes only the weights,
  so its pruned conv channels still emit BN's ``beta`` and its pruned FC neurons their bias. The stash above gives
  the ghosts the values the code's neurons would have kept learning.
* Ghosts start learning at the first optimiser step of the epoch (the learner has no epoch-start hook), and only the
  regeneration candidates' slots learn (the code trains every weight, masked or not, since it never masks
  gradients); the two coincide for a dense start, where the absent synapses are exactly those of pruned neurons.
  Ghost optimiser moments are zeroed at the epoch end (the code keeps AdamW's).
* The model's last Conv/Linear (the readout) is never neuron-pruned and is left dense by default
  (``dense_last = True``), as in the code, whose pruned layers are the six convs and the hidden FC.
* Neuron pruning and regeneration run at every epoch end from ``2N + 1`` on **but the last**: the code prunes at the
  end of its last epoch too, so that its final test (and here the saved checkpoint and exported model) would be a
  structure no optimiser step has trained. The library's rule is that no learner changes the topology after the last
  optimiser step of a run (docs/methods.md); ``final_change = True`` restores the code's schedule (the engine then
  warns that the run ends on an untrained structure). The default late rate of the last layer is spread over the
  epochs that do prune (``last_tail_increment``), so the last pruning still uses the code's final rate; only the
  rate increment of the dropped epoch, which the code never uses either, and that epoch's pruning are lost.
  ``stop_at = f`` (our option, the rule of the rewiring methods' ``stop_at``) stops both from epoch ``floor(f E)``
  (1-based) on, so that more epochs train a fixed structure; ``stop_at = 1`` is the default rule. The ranges and the
  constraint (weights, not topology) go on to the last epoch end.
* The training starts dense (``density = 1``, the paper); ``density < 1`` starts from a random sparse topology drawn
  by the core (``distribution``), which regeneration can then grow into.
* Ranges and percentiles are kept in the weights' dtype (the code's numpy ranges are float64; percentiles use numpy's
  linear interpolation); neuron scores are summed in float64 as in the code, so that neurons whose fan-in widths
  are the same multiset (common: ranges start equal and shrink by exact factors) tie as they do there rather than
  being ordered by float32 rounding; ties go to the lower index (the code's ``torch.argsort`` is not stable).
  The rate ``rho`` is stored as a fraction (``rho_init = 0.005`` is the code's 0.5 %).

Per-synapse state (ranges, counters, previous values) costs about 30 bytes per synapse of a layer with range
dynamics (kept on the weights' device and saved in every checkpoint).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from sparsesnn.sparse.learner import ScheduleUnit, StructureLearner
from sparsesnn.sparse.masks import MaskedLayer, prunable_layers
from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.settings import LearnerSettings

RANGE_LAYERS = ("all", "last", "none")
LAST_RATE_RULES = ("code", "formula")
#: the code's dead-neuron thresholds (20 conv / 50 FC surviving inputs) as fractions of the fan-in of its CIFAR net:
#: 20 for its convs with 256 input channels (256 * 3 * 3 = 2304 inputs), 50 for its 512 * 8 * 8 = 32768-input FC.
DEAD_CONV_RATIO = 20 / 2304
DEAD_FC_RATIO = 50 / 32768
#: the code's schedule of its FC layer's rate (``Mask.cal_prune``): ``aphla = 0.5 exp(-(e - 37))`` up to epoch 60,
#: ``0.0005`` after, times ``(512 - dead) / 10``, in percentage points.
CODE_LAST_SCALE = 0.5
CODE_LAST_TAIL = 0.0005
CODE_TAIL_EPOCH_AT_N18 = 60
#: the code's epoch constant and the growth 1.1 of its regeneration percentile at that N
CODE_N = 18
CODE_PERCENTILE_GROWTH = 1.1
#: the code runs 600 epochs (0-based 0-599); the tail increments of epochs 61-598 (538) reach a pruning step
CODE_EPOCHS = 600
CODE_TAIL_TOTAL = CODE_LAST_TAIL * (CODE_EPOCHS - 2 - CODE_TAIL_EPOCH_AT_N18)

_COUNT = torch.int16  # counters never exceed N + 1


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``numpy.percentile(values, q)`` (linear interpolation) for a tensor of any size (``torch.quantile`` refuses
    more than 2^24 elements; the DVS net's hidden FC has 67 M)."""
    flat = values.reshape(-1)
    n = flat.numel()
    pos = q / 100.0 * (n - 1)
    lo = min(math.floor(pos), n - 1)
    low = flat.kthvalue(lo + 1).values
    frac = pos - lo
    if frac <= 0.0 or lo + 1 >= n:
        return low
    high = flat.kthvalue(lo + 2).values
    return low + (high - low) * frac


def unit(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation to [0, 1] over the whole tensor; 0.5 everywhere when it is constant (code: ``unit``)."""
    lo, hi = x.min(), x.max()
    if bool(hi == lo):
        return torch.full_like(x, 0.5)
    return ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)


def _is_conv(weight: torch.Tensor) -> bool:
    return weight.dim() > 2


class SDSNNSettings(LearnerSettings):
    """SD-SNN's settings (``dense_last`` defaults to True). See the module docstring for the equations; ``N`` is the
    epoch constant (18 in the code for 600 CIFAR epochs; about 3 for a 30-epoch MNIST run). ``last_tail_epoch``:
    None is ``round(60 N / 18)``, the code's 60 at ``N = 18``; ``last_tail_increment``: None is the code's total
    ``0.0005 * 538`` spread over this run's tail epochs; ``percentile_growth``: None is ``1.1^(18 / N)``, the code's
    1.1 at ``N = 18``, so that the percentile reaches its cap the same number of N-units after 2N + 1. ``stop_at``:
    None (neuron pruning and regeneration at every epoch end from ``2N + 1`` on but the last one) or a fraction of
    the training epochs from which neither runs, by the rule of the rewiring methods (none at the end of epoch ``e``
    once ``e + 1 >= floor(stop_at * E)``); ranges and the constraint go on; our option. ``final_change``: prune and
    regenerate at the end of the last epoch too, as the paper's code does; the run then ends on a structure no step
    has trained, and the engine warns; cannot be combined with ``stop_at``."""

    dense_last: bool = Field(True, description="keep the last Conv/Linear dense")
    N: int = Field(18, ge=1, description="the epoch constant (the code's spines_num)")
    constraint: bool = Field(True, description="clip weights into their ranges for e > N")
    neuron_pruning: bool = Field(True, description="prune neurons by range score with the adaptive rate for e > 2N")
    regeneration: bool = Field(True, description="regrow pruned kernels / synapses for e > 2N (ghosts meanwhile)")
    range_layers: Literal[RANGE_LAYERS] = Field("all", description="whose ranges move")  # type: ignore[valid-type]
    rho_init: float = Field(0.005, ge=0.0, le=1.0, description="initial pruning rate, a fraction of the neurons")
    last_rate_rule: Literal[LAST_RATE_RULES] = Field(  # type: ignore[valid-type]
        "code", description="rate rule of the last neuron-pruned layer"
    )
    last_rho_init: float = Field(0.02, ge=0.0, le=1.0, description="initial rate of the last layer (code rule)")
    last_tail_epoch: int | None = Field(None, ge=0, description="epoch from which the code rule adds a fixed tail")
    last_tail_increment: float | None = Field(None, ge=0.0, le=1.0, description="the per-epoch tail increment")
    rate_decay: float = Field(5.0, gt=0.0, description="the 5 in exp(-(e - 2N - 1) / 5)")
    dead_conv_ratio: float = Field(DEAD_CONV_RATIO, ge=0.0, description="dead-neuron threshold, fraction of fan-in")
    dead_fc_ratio: float = Field(DEAD_FC_RATIO, ge=0.0, description="dead-neuron threshold, fraction of fan-in")
    prune_dead: bool = Field(False, description="also prune neurons that count as dead (our option)")
    conv_percentile: float = Field(65.0, ge=0.0, le=100.0, description="percentile base of conv regeneration")
    fc_percentile: float = Field(60.0, ge=0.0, le=100.0, description="percentile base of FC regeneration")
    percentile_growth: float | None = Field(None, gt=0.0, description="growth of the percentile per epoch")
    percentile_cap: float = Field(99.0, ge=0.0, le=100.0, description="cap of the regeneration percentile")
    shrink: float = Field(0.75, gt=0.0, le=1.0, description="the factor of a range shrink")
    stop_at: float | None = Field(None, ge=0.0, le=1.0, description="fraction of epochs after which nothing is pruned")
    final_change: bool = Field(False, description="prune at the last epoch end too (the paper's code)")

    @model_validator(mode="after")
    def _stop(self) -> SDSNNSettings:
        if self.final_change and self.stop_at is not None:
            raise ValueError("final_change prunes at the last epoch end and stop_at stops earlier: give one of them")
        return self


@METHODS.register("sdsnn")
class SDSNN(StructureLearner):
    """SD-SNN: dendritic-spine ranges + constraint, neuronal pruning, synaptic regeneration (see the module docstring;
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
        weight = module.weight
        ratio = self.dead_conv_ratio if _is_conv(weight) else self.dead_fc_ratio
        return ratio * weight[0].numel()

    def alive_count(self, name: str) -> int:
        """Neurons of layer ``name`` that are not pruned and keep at least the dead threshold of input synapses."""
        module = self._modules_by_name[name]
        threshold = self.dead_threshold(module)
        if name in self.structure:
            s = self.structure[name]
            counts = s.reshape(s.shape[0], -1).sum(1)
            return int((self.alive[name] & (counts >= threshold) & (counts > 0)).sum())
        fan_in = module.weight[0].numel()
        return module.weight.shape[0] if fan_in >= threshold and fan_in > 0 else 0

    def regeneration_percentile(self, name: str, epoch: int) -> float:
        """``q_e = min(base + g^(e - 2N - 1), 99)``, base 65 for conv and 60 for FC, ``g = 1.1^(18/N)``."""
        base = self.conv_percentile if _is_conv(self._layer(name).weight) else self.fc_percentile
        return min(base + self.percentile_growth ** (epoch - 2 * self.N - 1), self.percentile_cap)

    @staticmethod
    def prune_count(n_out: int, rho: float) -> int:
        """How many of a layer's ``n_out`` neurons the rate ``rho`` prunes: ``floor(n_out * rho)``, never all."""
        return min(math.floor(n_out * rho + 1e-9), n_out - 1)

    def rate_increment(self, name: str, epoch: int, alive: int, alive_next: int) -> float:
        """How much ``rho`` of layer ``name`` grows after its pruning at ``epoch`` (a fraction, not percent)."""
        k = epoch - 2 * self.N - 1
        ratio = alive / max(alive_next, 1)
        if name == self.last_layer and self.last_rate_rule == "code":
            factor = CODE_LAST_SCALE * math.exp(-k) if epoch <= self.last_tail_epoch else self.last_tail_increment
        else:
            factor = math.exp(-k / self.rate_decay)
        return factor * ratio / 100.0

    def _kernel_view(self, t: torch.Tensor) -> torch.Tensor:
        """A conv weight-shaped tensor as ``[n_out, n_in, kernel]``."""
        return t.reshape(t.shape[0], t.shape[1], -1)

    def ghost_slots(self, name: str) -> torch.Tensor:
        """Weight-shaped bool: the absent entries that may regrow (fully absent conv kernels, absent FC synapses)."""
        s = self.structure[name]
        if not _is_conv(s):
            return ~s
        k = self._kernel_view(s)
        return (~k.any(-1, keepdim=True)).expand_as(k).reshape(s.shape)

    @staticmethod
    def _neuron_params(layer: MaskedLayer) -> list[tuple[str, torch.Tensor]]:
        params = []
        bias = getattr(layer.module, "bias", None)
        if isinstance(bias, torch.Tensor):
            params.append(("bias", bias))
        if layer.norm is not None:
            for key, p in (("norm_weight", layer.norm.weight), ("norm_bias", layer.norm.bias)):
                if isinstance(p, torch.Tensor):
                    params.append((key, p))
        return params

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
            slots = self.ghost_slots(layer.name)
            if not bool(slots.any()):
                continue
            dead = ~self.alive[layer.name]
            self.masks.set_neuron_mask(layer, torch.ones_like(dead))
            stash = self.stash.get(layer.name, {})
            for key, p in self._neuron_params(layer):
                if key in stash:
                    p[dead] = stash[key][dead]
            self.masks.set_mask(layer, self.structure[layer.name] | slots)
        self.ghost = True

    @torch.no_grad()
    def _apply_structure(self) -> None:
        """Working masks back to the structure: ghosts, their moments and pruned neurons' bias / BN to zero."""
        assert self.masks is not None
        for layer in self.layers:
            name = layer.name
            stash = self.stash.setdefault(name, {})
            live = ~self.alive[name] & layer.neuron_mask  # pruned in the structure, live in the working mask
            if bool(live.any()):
                for key, p in self._neuron_params(layer):
                    if key not in stash:
                        stash[key] = torch.zeros_like(p.detach())
                    stash[key][live] = p.detach()[live]
            revived = self.alive[name] & ~layer.neuron_mask  # regrown while its bias / BN were held at zero
            self.masks.set_mask(layer, self.structure[name])  # first: keeps the regrown weights of revived neurons
            self.masks.set_neuron_mask(layer, self.alive[name])
            if bool(revived.any()):
                for key, p in self._neuron_params(layer):
                    if key in stash:
                        p[revived] = stash[key][revived]
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

    # -- 1. ranges and constraint -----------------------------------------------------------------------------------
    def _init_ranges(self) -> None:
        for layer in self.layers:
            w = layer.weight.detach() * self.structure[layer.name]
            top = w.max()
            self.ranges[layer.name] = {"pos": torch.full_like(w, float(top)), "neg": torch.full_like(w, -float(top))}
            if self._moves(layer.name):
                z = torch.zeros(w.shape, dtype=_COUNT, device=w.device)
                b = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
                self.dynamics[layer.name] = {
                    "n_pos": z.clone(), "s_pos": torch.zeros_like(w), "prev_pos": b.clone(),
                    "n_neg": z.clone(), "s_neg": torch.zeros_like(w), "prev_neg": b.clone(),
                    "n_dec": z.clone(), "prev_dec": b.clone(), "w_prev": w.abs(),
                }  # fmt: skip

    def _range_dynamics(self) -> tuple[int, int]:
        grown = shrunk = 0
        n = self.N
        for layer in self.layers:
            d = self.dynamics.get(layer.name)
            if d is None:
                continue
            w = layer.weight.detach() * self.structure[layer.name]
            r = self.ranges[layer.name]
            for side, beyond in (("pos", w >= r["pos"]), ("neg", w <= r["neg"])):
                running = beyond & d[f"prev_{side}"]
                d[f"n_{side}"] = torch.where(running, d[f"n_{side}"] + 1, 0).to(_COUNT)
                d[f"s_{side}"] = torch.where(running, d[f"s_{side}"] + (w - r[side]), 0.0)
                hit = d[f"n_{side}"] >= n
                r[side] += torch.where(hit, d[f"s_{side}"] / n, 0.0)
                d[f"n_{side}"].masked_fill_(hit, 0)
                d[f"s_{side}"].masked_fill_(hit, 0.0)
                d[f"prev_{side}"] = beyond
                grown += int(hit.sum())
            aw = w.abs()
            decreasing = aw < d["w_prev"]
            running = decreasing & d["prev_dec"]
            d["n_dec"] = torch.where(running, d["n_dec"] + 1, 0).to(_COUNT)
            hit = d["n_dec"] >= n
            factor = torch.where(hit, self.shrink, 1.0).to(w.dtype)
            r["pos"] *= factor
            r["neg"] *= factor
            d["n_dec"].masked_fill_(hit, 0)
            d["prev_dec"] = decreasing
            d["w_prev"] = aw
            shrunk += int(hit.sum())
        return grown, shrunk

    def _constrain(self) -> int:
        clipped = 0
        for layer in self.layers:
            r = self.ranges[layer.name]
            w = layer.weight
            clipped += int(((w > r["pos"]) | (w < r["neg"])).sum())
            w.copy_(torch.maximum(torch.minimum(w, r["pos"]), r["neg"]))
        return clipped

    # -- 3. regeneration --------------------------------------------------------------------------------------------
    def _regenerate(self, epoch: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            name = layer.name
            s = self.structure[name]
            w = layer.weight.detach()
            conv = _is_conv(w)
            if conv:
                values = self._kernel_view(w).sum(-1)
                pruned = ~self._kernel_view(s).any(-1)
            else:
                values, pruned = w, ~s
            state = self.regrowth.get(name)
            if state is None:
                state = {"count": torch.zeros(values.shape, dtype=_COUNT, device=w.device),
                         "prev": torch.zeros(values.shape, dtype=torch.bool, device=w.device)}  # fmt: skip
                self.regrowth[name] = state
            if bool(pruned.any()):
                q = self.regeneration_percentile(name, epoch)
                candidates = (values > percentile(values, q)) & pruned
            else:
                candidates = torch.zeros_like(pruned)
            running = candidates & state["prev"]
            state["count"] = torch.where(running, state["count"] + 1, 0).to(_COUNT)
            grow = state["count"] > self.N
            state["count"].masked_fill_(grow, 0)
            state["prev"] = candidates
            out[name] = int(grow.sum())
            if out[name]:
                grow_w = grow.unsqueeze(-1).expand(*grow.shape, self._kernel_view(s).shape[-1]) if conv else grow
                s |= grow_w.reshape(s.shape)
                self.alive[name] |= grow_w.reshape(s.shape[0], -1).any(1)
        return out

    # -- 2. neuronal pruning ----------------------------------------------------------------------------------------
    def neuron_scores(self, name: str) -> torch.Tensor:
        """Sum over each neuron's fan-in of ``unit(r+ + |r-|) * M``, in float64 like the code's numpy arrays (see the
        module docstring: rows sharing their multiset of widths then tie as in the code)."""
        r = self.ranges[name]
        s = self.structure[name]
        width = unit(r["pos"].double() + r["neg"].double().abs()) * s
        return width.reshape(s.shape[0], -1).sum(1)

    def _prune_neurons(self, epoch: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.neuron_layers:  # in model order; each layer's rate is updated right after its pruning
            s = self.structure[name]
            n_out = s.shape[0]
            count = self.prune_count(n_out, self.rho[name])
            kill = torch.zeros_like(self.alive[name])
            if count > 0:
                lowest = torch.argsort(self.neuron_scores(name), stable=True)[:count]
                kill[lowest] = True
                kill &= ~self.ever_pruned[name]
            if self.prune_dead:
                counts = s.reshape(n_out, -1).sum(1)
                threshold = self.dead_threshold(self._modules_by_name[name])
                kill |= self.alive[name] & ((counts < threshold) | (counts == 0))
            kill &= self.alive[name]
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
