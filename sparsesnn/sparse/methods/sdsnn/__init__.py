"""SD-SNN (Han, Zhao, Zeng, Pan — arXiv 2211.12219; Information Sciences 2025): adaptive structure development.

One learner (:class:`~.learner.SDSNN`, registered as ``sdsnn``), three mechanisms that can each be switched off, run
once per **epoch** (``on_epoch_end(e)``, ``e`` counting from 0 as in the authors' loop), with ``N`` (``N = 18`` in the
code, ``spines_num``) the epoch constant. One module per mechanism, each with its equations:

1. :mod:`.spines`: dendritic-spine ranges and the synaptic constraint (``range_layers``, ``constraint``); ranges
   move after ``N + 1`` epochs running beyond them, and for ``e > N`` every weight is clipped into its range.
2. :mod:`.pruning`: neuronal pruning with the adaptive (neurotrophic) rate (``neuron_pruning``), for ``e > 2N``:
   the lowest-scoring neurons by range width, up to the layer's cumulative rate ``rho_l``.
3. :mod:`.regeneration`: synaptic regeneration (``regeneration``), for ``e > 2N``, before the pruning of that
   epoch: pruned kernels / synapses whose re-learned values stay above a rising percentile regrow.

:mod:`.ghosts` lets pruned synapses re-learn during the epoch (the working masks widened, then set back to the real
structure at the epoch end), :mod:`.settings` holds :class:`~.settings.SDSNNSettings` and the constants of the
authors' code, :mod:`.learner` the learner: its structure, schedule, rates and checkpoint state.

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
  one's own, not the paper's.
  ``"formula"`` applies the general formula to it too, which with a 10-class readout reaches 100 % in a few
  epochs. At most ``n_l - 1`` neurons of a layer are ever pruned.
* The regeneration percentile ``q_e = min(base + 1.1^(e - 2N - 1), 99)`` climbs from ~61 to its cap 99 in 37 epochs,
  about 2N of the code's ``N = 18``, so that the code's run spends 94 % of its pruning epochs (74-599) at 99: a pruned
  synapse comes back only if it re-learns a top-1 % value. With ``1.1`` kept, a 15-epoch run with ``N = 2`` would end at
  ``q = 62.4``, and regeneration would undo most of the pruning (BENCHMARKS.md). The growth is therefore an epoch
  constant scaled like ``2N + 1`` and ``60``: ``percentile_growth = 1.1^(18 / N)`` (2.36 for ``N = 2``: 61, 62.4, 65.6,
  73.1, 90.9, then 99), the code's 1.1 at ``N = 18``. The rate decays (``exp(-k / 5)``, the FC's ``exp(-k)``) are kept:
  what they set is a total that a short run already almost collects (``sum exp(-k / 5)`` over 9 epochs is 4.1 of the
  code's 5.5).
* A pruned neuron here has zero bias and zero BatchNorm ``gamma``/``beta`` (the core's neuron mask), so that its input
  is exactly 0 and :func:`~sparsesnn.sparse.shrink.compact` can remove it; the code zeroes only the weights, so its
  pruned conv channels still emit BN's ``beta`` and its pruned FC neurons their bias. The stash (:mod:`.ghosts`) gives
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
"""

from sparsesnn.sparse.methods.sdsnn.learner import SDSNN
from sparsesnn.sparse.methods.sdsnn.pruning import unit
from sparsesnn.sparse.methods.sdsnn.regeneration import percentile
from sparsesnn.sparse.methods.sdsnn.settings import (
    CODE_EPOCHS,
    CODE_LAST_SCALE,
    CODE_LAST_TAIL,
    CODE_N,
    CODE_PERCENTILE_GROWTH,
    CODE_TAIL_EPOCH_AT_N18,
    CODE_TAIL_TOTAL,
    DEAD_CONV_RATIO,
    DEAD_FC_RATIO,
    LAST_RATE_RULES,
    RANGE_LAYERS,
    SDSNNSettings,
)

__all__ = [
    "CODE_EPOCHS",
    "CODE_LAST_SCALE",
    "CODE_LAST_TAIL",
    "CODE_N",
    "CODE_PERCENTILE_GROWTH",
    "CODE_TAIL_EPOCH_AT_N18",
    "CODE_TAIL_TOTAL",
    "DEAD_CONV_RATIO",
    "DEAD_FC_RATIO",
    "LAST_RATE_RULES",
    "RANGE_LAYERS",
    "SDSNN",
    "SDSNNSettings",
    "percentile",
    "unit",
]
