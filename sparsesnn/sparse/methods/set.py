"""SET (Mocanu et al., Nature Communications 2018): sparse evolutionary training.

After every epoch, each layer drops the fraction ``zeta`` (0.3) of its weights closest to zero (the smallest
positive and the largest negative, half each) and regrows as many at random positions. Initial topology ER.
Differences from the paper: rewiring can also run every N steps (``update_unit="steps"``); regrown weights start at
0 rather than at a small random value (set ``grow_init`` to change).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.rewiring import RewiringLearner, RewiringSettings
from sparsesnn.sparse.schedules import DROP_SCHEDULES
from sparsesnn.sparse.settings import LearnerSettings


class SETSettings(RewiringSettings):
    """SET's defaults: every epoch, a constant 30 %, prune the weights closest to zero, regrow at random, ER."""

    update_every: int = Field(1, ge=1, description="rewiring period, in steps or epochs (update_unit)")
    update_unit: Literal["steps", "epochs"] = Field("epochs", description="what update_every counts")
    schedule: Literal[DROP_SCHEDULES] = Field("constant", description="decay of alpha over training")  # type: ignore[valid-type]
    stop_at: float = Field(1.0, ge=0.0, le=1.0, description="fraction of training after which the topology is frozen")
    prune: str = Field("set", description="prune criterion (sparsesnn.sparse.criteria.PRUNE)")
    grow: str = Field("random", description="grow criterion (sparsesnn.sparse.criteria.GROW)")
    distribution: Literal["uniform", "er", "erk"] = Field("er", description="how the density is spread over layers")


@METHODS.register("set")
class SET(RewiringLearner):
    name = "set"
    Settings: ClassVar[type[LearnerSettings]] = SETSettings
