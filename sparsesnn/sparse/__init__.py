"""The structure-learning core: masks, criteria, schedules, the learner lifecycle and the methods."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from sparsesnn.errors import ConfigError
from sparsesnn.sparse.learner import DenseLearner, LayerChange, StructureLearner
from sparsesnn.sparse.methods import METHODS
from sparsesnn.sparse.settings import LearnerSettings, params_problems

if TYPE_CHECKING:
    import torch

    from sparsesnn.config import SparseConfig

__all__ = ["METHODS", "DenseLearner", "LayerChange", "LearnerSettings", "StructureLearner", "build_learner"]


def build_learner(
    cfg: SparseConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    total_steps: int,
    steps_per_epoch: int,
    total_epochs: int,
    seed: int,
) -> StructureLearner:
    """Build the learner a ``[sparse]`` config section names; bad settings raise :class:`ConfigError`."""
    factory = METHODS[cfg.method]
    if cfg.method == "dense":
        if cfg.density != 1.0:
            raise ConfigError(f"sparse.density = {cfg.density}: the 'dense' method keeps every synapse; use 1.0")
        return DenseLearner(model, optimizer)
    kwargs: dict[str, Any] = dict(
        density=cfg.density,
        include=cfg.include,
        exclude=cfg.exclude,
        seed=seed,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        total_epochs=total_epochs,
    )
    for key in ("distribution", "dense_first", "dense_last"):  # None: the method's own default
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    problems = params_problems(factory.Settings, cfg.params)
    if problems:
        raise ConfigError("; ".join(f"sparse.params.{p}" for p in problems))
    try:
        return factory(model, optimizer, **kwargs, **cfg.params)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"[sparse] method {cfg.method!r}: {exc}") from None
