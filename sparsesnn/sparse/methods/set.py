"""SET (Mocanu et al., Nature Communications 2018): sparse evolutionary training.

After every epoch, each layer drops the fraction ``zeta`` (0.3) of its weights closest to zero (the smallest
positive and the largest negative, half each) and regrows as many at random positions. Initial topology ER.
Differences from the paper: rewiring can also run every N steps (``update_unit="steps"``); regrown weights start at
0 rather than at a small random value (set ``grow_init`` to change).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.rewiring import RewiringLearner


@METHODS.register("set")
class SET(RewiringLearner):
    name = "set"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        defaults: dict[str, Any] = dict(
            update_every=1,
            update_unit="epochs",
            drop_fraction=0.3,
            schedule="constant",
            stop_at=1.0,
            prune="set",
            grow="random",
            distribution="er",
        )
        super().__init__(model, optimizer, **{**defaults, **kwargs})
