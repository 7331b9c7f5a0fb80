"""``mlp``: a fully connected SNN, 784-800-10 by default (the classic MNIST MLP of sparse-training papers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparsesnn.layers import SeqFolded
from sparsesnn.models.common import NeuronSpec, SpikingBlock
from sparsesnn.models.registry import MODELS


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        return self.output_neuron(self.classifier(self.features(x)))


@MODELS.register("mlp")
def mlp(
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 28,
    hidden: Sequence[int] = (800,),
    neuron: NeuronSpec | None = None,
    spiking_output: bool = False,
) -> SpikingMLP:
    """784-800-10 for MNIST; ``input_size`` (an int for square images, or (H, W)) sets the input width."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    return SpikingMLP(in_channels * h * w, num_classes, hidden, neuron, spiking_output)
