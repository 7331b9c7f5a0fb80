"""ESL-SNN (Shen, Xu, Liu, Wang, Pan, Tang — AAAI 2023, arXiv 2306.03693) and EvoKD (Xu et al., arXiv 2304.09500).

ESL-SNN trains an SNN sparse from scratch: an Erdos-Renyi random graph at connection density ``d`` to start with,
surrogate-gradient BPTT on every step, and every ``T_iter`` steps a prune-and-regrow rewiring that keeps the density
of every layer fixed; the learned sparse structure is the output.

What the paper fixes [V]: ER initialisation, fixed density, periodic pruning and regrowth during training.
What we decided where it is silent [D] (docs/methods.md; all are config options):
``update_every = 100`` steps (``T_iter``), drop fraction ``alpha_0 = 0.3`` on a cosine decay ending at
``stop_at = 0.75`` of training, drop the smallest ``|w|``, regrow by gradient (``grow = "momentum"`` or
``"random"`` as options), regrown weights start at 0, first and last layer dense. It is the shared
:class:`~sparsesnn.sparse.rewiring.RewiringLearner` with these defaults, not a separate implementation.

EvoKD ("evolutionary structure construction with reverse knowledge distillation") is the same rewiring while the
SNN learns from a teacher: one learner (this one) composed with a distillation loss
(:mod:`sparsesnn.train.distill`, default divergence reverse KL). The full text of the paper was not available to us; the
composition is our reconstruction (docs/methods.md, EvoKD).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sparsesnn.sparse.methods.registry import METHODS
from sparsesnn.sparse.rewiring import RewiringLearner, RewiringSettings
from sparsesnn.sparse.settings import LearnerSettings


class ESLSettings(RewiringSettings):
    """ESL-SNN's defaults [D]: every 100 steps, alpha_0 = 0.3 on a cosine until 75 %, magnitude out, gradient in, ER,
    first and last layer dense."""

    distribution: Literal["uniform", "er", "erk"] = Field("er", description="how the density is spread over layers")
    dense_first: bool = Field(True, description="keep the first Conv/Linear dense")
    dense_last: bool = Field(True, description="keep the last Conv/Linear dense")


@METHODS.register("esl")
class ESL(RewiringLearner):
    """ESL-SNN: fixed-density evolutionary rewiring from an ER start (see the module docstring)."""

    name = "esl"
    Settings: ClassVar[type[LearnerSettings]] = ESLSettings


@METHODS.register("evokd")
class EvoKD(ESL):
    """ESL rewiring driven by a distillation objective; the engine refuses it without a ``[distill]`` section."""

    name = "evokd"
    requires_distillation = True
