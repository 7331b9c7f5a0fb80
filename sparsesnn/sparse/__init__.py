"""The structure-learning core: masks, criteria, schedules, the learner lifecycle and the methods."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from torch import nn

from sparsesnn.errors import ConfigError
from sparsesnn.sparse.learner import DenseLearner, LayerChange, StructureLearner
from sparsesnn.sparse.methods import METHODS

if TYPE_CHECKING:
    import torch

    from sparsesnn.config import SparseConfig

__all__ = ["METHODS", "DenseLearner", "LayerChange", "StructureLearner", "build_learner"]


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
    allowed = accepted_keys(factory)
    for key in cfg.params:
        if key in kwargs or key not in allowed:
            raise ConfigError(
                f"sparse.params.{key}: not a setting of method {cfg.method!r}; allowed: {sorted(allowed - set(kwargs))}"
            )
    try:
        return factory(model, optimizer, **kwargs, **cfg.params)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"[sparse] method {cfg.method!r}: {exc}") from None


def accepted_keys(factory: Any) -> set[str]:
    """The keyword-only settings a method's class (and its bases) accepts: what ``[sparse.params]`` may set."""
    keys: set[str] = set()
    for cls in getattr(factory, "__mro__", (factory,)):
        init = cls.__init__ if isinstance(cls, type) else cls
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            continue
        keys.update(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("self",))
    return keys
