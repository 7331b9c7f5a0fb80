"""The model registry: ``build_model("convnet", in_channels=1, num_classes=10)``.

Every registered model is a class with a settings model (``Settings``, a :class:`ModelSettings`: what its config
``[model.params]`` may set, with types, ranges, defaults and meanings) and ``from_settings(settings, neuron)``, which
builds it. The dataset fills ``in_channels``, ``num_classes`` and ``input_size``; ``[neuron]`` gives the neuron.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from pydantic import Field
from torch import nn

from sparsesnn.core.registry import Registry
from sparsesnn.core.settings import Settings, validate_settings
from sparsesnn.models.common import NeuronSpec


class ModelSettings(Settings):
    """What every model takes; the first three come from the dataset (``DatasetInfo``) unless set."""

    in_channels: int = Field(1, ge=1, description="input channels (from the dataset)")
    num_classes: int = Field(10, ge=1, description="output classes (from the dataset)")
    input_size: int = Field(28, ge=1, description="input height = width (from the dataset)")
    spiking_output: bool = Field(False, description="the readout fires too (rate / MSE losses)")


#: the settings a run's dataset provides (``[model.params]`` may still set them)
DATASET_KEYS = frozenset({"in_channels", "num_classes", "input_size"})


class RegisteredModel(Protocol):
    """What the registry holds: a model class with its settings model and a constructor from it."""

    Settings: ClassVar[type[ModelSettings]]

    @classmethod
    def from_settings(cls, settings: Any, neuron: NeuronSpec | None = None) -> nn.Module: ...


MODELS: Registry[type[RegisteredModel]] = Registry("model")  # type: ignore[type-var]


def build_model(name: str, neuron: NeuronSpec | None = None, **settings: Any) -> nn.Module:
    """Build a registered model from keyword settings (validated by its ``Settings``). Every model maps
    ``[T, B, C, H, W]`` (or ``[T, B, F]``) to ``[T, B, classes]``."""
    cls = MODELS[name]
    return cls.from_settings(validate_settings(cls.Settings, name, settings), neuron)
