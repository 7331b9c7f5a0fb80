"""Typed settings of the structure learners: one frozen pydantic model per method, beside its implementation.

Each learner class names its model in ``Settings``. The model holds every keyword the learner takes: its fields,
types, ranges, defaults and a one-line description each. It is the one place they are declared: the learner
validates its keywords through it (``RigL(model, opt, density=0.1, update_every=50)``, or
``RigL(model, opt, settings=RigL.Settings(...))``), the config validates ``[sparse.params]`` against it when the file
is read (before any data is opened), and ``sparsesnn info <method>`` prints it.

The settings every method shares (:class:`LearnerSettings`) come from the ``[sparse]`` section (density,
distribution, granularity, layer selection) or from the run (seed and budget); a method's own settings are its
``[sparse.params]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from sparsesnn.core.settings import Settings, problems_of
from sparsesnn.sparse.granularity import Granularity


class LearnerSettings(Settings):
    """What every structure learner takes (the ``static`` method: a fixed random topology).

    ``granularity`` and ``block_size`` set the groups of synapses that are pruned and grown together
    (:mod:`sparsesnn.sparse.granularity`): ``weight`` (the papers'), ``block`` (``block_size`` consecutive output
    channels at one input and tap), ``tap`` (every output at one input and tap) or ``kernel`` (one output's kernel
    at one input). A method that has no coarse form narrows the field to ``"weight"`` and refuses the others.
    """

    density: float = Field(1.0, gt=0.0, le=1.0, description="fraction of active synapses over the masked layers")
    distribution: Literal["uniform", "er", "erk"] = Field(
        "erk", description="how the density is spread over layers: uniform, Erdos-Renyi (er) or ERK"
    )
    budget: Literal["params", "macs"] = Field(
        "params",
        description="what density counts: the masked layers' weights (params) or their dense multiply-accumulates "
        "(macs, needs an example input)",
    )
    dense_first: bool = Field(False, description="keep the first Conv/Linear dense")
    dense_last: bool = Field(False, description="keep the last Conv/Linear dense")
    granularity: Granularity = Field(
        "weight", description="what is pruned and grown together: single weights, blocks, taps or kernels"
    )
    block_size: int = Field(8, ge=1, description="output channels per group at granularity = 'block'")
    include: tuple[str, ...] = Field((), description="fnmatch patterns of the module names to mask (empty: all)")
    exclude: tuple[str, ...] = Field((), description="fnmatch patterns of module names never to mask")
    seed: int = Field(0, ge=0, description="seeds the learner's own generator (initial masks, random criteria)")
    total_steps: int = Field(0, ge=0, description="optimiser steps of the run (0: unknown; set by the engine)")
    steps_per_epoch: int = Field(0, ge=0, description="optimiser steps per epoch (0: unknown; set by the engine)")
    total_epochs: int = Field(0, ge=0, description="epochs of the run (0: unknown; set by the engine)")

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _patterns(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("a list of patterns, not one string")
        return tuple(v) if isinstance(v, list) else v


#: the shared settings: set by ``[sparse]`` itself or by the run, never in ``[sparse.params]``
SHARED_KEYS = frozenset(LearnerSettings.model_fields)


def params_problems(cls: type[LearnerSettings], params: dict[str, Any]) -> list[str]:
    """What is wrong with a method's own settings (``[sparse.params]``) alone, one line each (empty: nothing); the
    shared settings belong elsewhere and are refused here."""
    shared = sorted(SHARED_KEYS & set(params))
    if shared:
        return [f"{key}: set it in [sparse] (or it comes from the run), not in [sparse.params]" for key in shared]
    return problems_of(cls, params, hidden=SHARED_KEYS)
