"""The model registry: ``build_model("convnet", in_channels=1, num_classes=10)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from sparsesnn.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Every model maps ``[T, B, C, H, W]`` (or ``[T, B, F]``) to ``[T, B, classes]``."""
    return MODELS[name](**kwargs)
