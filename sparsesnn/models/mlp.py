"""``mlp``: a fully connected SNN, 784-800-10 by default (the classic MNIST MLP of sparse-training papers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from sparsesnn.models.common import NeuronSpec, SpikingBlock
from sparsesnn.models.registry import MODELS, ModelSettings
from sparsesnn.neuron.layers import SeqFolded


class MLPSettings(ModelSettings):
    """A fully connected SNN (784-800-10 for MNIST)."""

    input_size: int | tuple[int, int] = Field(28, description="input height = width, or (height, width)")
    hidden: tuple[int, ...] = Field((800,), description="widths of the spiking hidden layers")


@MODELS.register("mlp")
class SpikingMLP(nn.Module):
    """``Flatten -> [Linear -> LIF] * len(hidden) -> Linear`` on ``[T, B, ...]``; output ``[T, B, num_classes]``.

    With ``spiking_output=True`` the last layer fires too (for rate/MSE losses).
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden: Sequence[int] = (800,),
        neuron: NeuronSpec | None = None,
        spiking_output: bool = False,
    ) -> None:
        super().__init__()
        spec = neuron or NeuronSpec()
        blocks: list[nn.Module] = []
        width = in_features
        for h in hidden:
            blocks.append(SpikingBlock([nn.Linear(width, h)], spec.build()))
            width = h
        self.features = nn.Sequential(*blocks)
        self.classifier = SeqFolded(nn.Linear(width, num_classes))
        self.output_neuron = spec.build() if spiking_output else nn.Identity()

    Settings: ClassVar[type[ModelSettings]] = MLPSettings

    @classmethod
    def from_settings(cls, s: MLPSettings, neuron: NeuronSpec | None = None) -> SpikingMLP:
        """784-800-10 for MNIST: the input width is ``in_channels * H * W``."""
        h, w = (s.input_size, s.input_size) if isinstance(s.input_size, int) else s.input_size
        return cls(s.in_channels * h * w, s.num_classes, s.hidden, neuron, s.spiking_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        return self.output_neuron(self.classifier(self.features(x)))
