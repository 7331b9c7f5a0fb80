"""RigL (Evci et al., ICML 2020): rigging the lottery.

Every ``update_every`` (100) steps until ``stop_at`` (75 %) of training, each layer drops the
``alpha_t`` fraction of active weights with the smallest magnitude and grows as many absent connections with the
largest dense gradient ``|dL/dW|`` (captured only on the update steps); ``alpha_t`` decays on a cosine from
``alpha_0 = 0.3``. Initial topology ERK with the first layer dense, as in the paper. Regrown weights start at 0.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.rewiring import RewiringLearner, RewiringSettings
from sparsesnn.sparse.settings import LearnerSettings


class RigLSettings(RewiringSettings):
    """RigL's defaults: every 100 steps, alpha_0 = 0.3 on a cosine until 75 %, magnitude out, gradient in, ERK with
    the first layer dense."""

    distribution: Literal["uniform", "er", "erk"] = Field("erk", description="how the density is spread over layers")
    dense_first: bool = Field(True, description="keep the first Conv/Linear dense")


@METHODS.register("rigl")
class RigL(RewiringLearner):
    name = "rigl"
    Settings: ClassVar[type[LearnerSettings]] = RigLSettings
