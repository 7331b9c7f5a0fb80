"""RigL (Evci et al., ICML 2020): rigging the lottery.

Every ``update_every`` (100) steps until ``stop_at`` (75 %) of training, each layer drops the
``alpha_t`` fraction of active weights with the smallest magnitude and grows as many absent connections with the
largest dense gradient ``|dL/dW|`` (captured only on the update steps); ``alpha_t`` decays on a cosine from
``alpha_0 = 0.3``. Initial topology ERK with the first layer dense, as in the paper. Regrown weights start at 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.rewiring import RewiringLearner


@METHODS.register("rigl")
class RigL(RewiringLearner):
    name = "rigl"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        defaults: dict[str, Any] = dict(
            update_every=100,
            drop_fraction=0.3,
            schedule="cosine",
            stop_at=0.75,
            prune="magnitude",
            grow="gradient",
            distribution="erk",
            dense_first=True,
        )
        super().__init__(model, optimizer, **{**defaults, **kwargs})
