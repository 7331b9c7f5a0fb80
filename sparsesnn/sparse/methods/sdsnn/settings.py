"""SD-SNN's settings (:class:`SDSNNSettings`) and the constants of the authors' code that its defaults derive from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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


class SDSNNSettings(LearnerSettings):
    """SD-SNN's settings (``dense_last`` defaults to True). See the package docstring for the equations; ``N`` is the
        epoch constant (18 in the code for 600 CIFAR epochs; about 3 for a 30-epoch MNIST run). ``last_tail_epoch``:
        None is ``round(60 N / 18)``, the code's 60 at ``N = 18``; ``last_tail_increment``: None is the code's total
        ``0.0005 * 538`` spread over this run's tail epochs; ``percentile_growth``: None is ``1.1^(18 / N)``, the code's
        1.1 at ``N = 18``, so that the percentile reaches its cap the same number of N-units after 2N + 1. ``stop_at``:
        None (neuron pruning and regeneration at every epoch end from ``2N + 1`` on but the last one) or a fraction of
        the training epochs from which neither runs, by the rule of the rewiring methods (none at the end of epoch ``e``
        once ``e + 1 >= floor(stop_at * E)``); ranges and the constraint go on; our option. ``final_change``: prune and
        regenerate at the end of the last epoch too, as the paper's code does; the run then ends on a structure no step
        has trained, and the engine warns; cannot be combined with ``stop_at``. ``granularity`` is ``"weight"`` only: a
    neuron pruned inside a block or tap group would break the group invariant, and regeneration revives single synapses
    and kernels by their re-learned values, so a coarse granularity is refused rather than ignored."""

    dense_last: bool = Field(True, description="keep the last Conv/Linear dense")
    granularity: Literal["weight"] = Field(
        "weight", description="single weights only: neuron pruning and regeneration have no group form here"
    )
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
