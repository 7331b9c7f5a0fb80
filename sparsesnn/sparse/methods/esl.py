"""ESL-SNN (Shen, Xu, Liu, Wang, Pan, Tang — AAAI 2023, arXiv 2306.03693) and EvoKD (Xu et al., arXiv 2304.09500).

ESL-SNN trains an SNN sparse from scratch: an Erdos-Renyi random graph at connection density ``d`` to start with,
surrogate-gradient BPTT on every step, and every ``T_iter`` steps a prune-and-regrow rewiring that keeps the density
of every layer fixed; the learned sparse structure is the output.

What the paper fixes [V]: ER initialisation, fixed density, periodic pruning and regrowth during training.
What we decided where it is silent [D] (../shared/METHODS.md, all config options):
``update_every = 100`` steps (``T_iter``), drop fraction ``alpha_0 = 0.3`` on a cosine decay ending at
``stop_at = 0.75`` of training, drop the smallest ``|w|``, regrow by gradient (``grow = "momentum"`` or
``"random"`` as options), regrown weights start at 0, first and last layer dense. It is the shared
:class:`~sparsesnn.sparse.rewiring.RewiringLearner` with these defaults, not a separate implementation.

EvoKD ("evolutionary structure construction with reverse knowledge distillation") is the same rewiring while the
SNN learns from a teacher: one learner (this one) composed with a distillation loss
(:mod:`sparsesnn.distill`, default divergence reverse KL). The full text of the paper was not available to us; the
composition follows ../shared/METHODS.md section 2 and is a reconstruction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.rewiring import RewiringLearner

ESL_DEFAULTS: dict[str, Any] = dict(
    update_every=100,
    drop_fraction=0.3,
    schedule="cosine",
    stop_at=0.75,
    prune="magnitude",
    grow="gradient",
    distribution="er",
    dense_first=True,
    dense_last=True,
)


@METHODS.register("esl")
class ESL(RewiringLearner):
    """ESL-SNN: fixed-density evolutionary rewiring from an ER start (see the module docstring)."""

    name = "esl"
    requires_distillation = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **{**ESL_DEFAULTS, **kwargs})


@METHODS.register("evokd")
class EvoKD(ESL):
    """ESL rewiring driven by a distillation objective; the engine refuses it without a ``[distill]`` section."""

    name = "evokd"
    requires_distillation = True
