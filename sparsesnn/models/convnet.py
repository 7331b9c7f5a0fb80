"""``convnet``: the MNIST convolutional SNN.

Layout ``{Conv3x3(bias=False)-BN-LIF-MaxPool2}x2 - Flatten - FC`` follows SpikingJelly's convolutional MNIST /
Fashion-MNIST example (``spikingjelly.activation_based.examples.conv_fashion_mnist``, after Fang et al. ICCV 2021),
which uses 128 channels in both convs and an FC-LIF-FC head. Our default is the narrower (32, 64) with a single FC
readout (3,136 -> 10), the network measured in BENCHMARKS.md by ``bench/throughput.py``: it reaches
over 99 % on MNIST at a fraction of the CPU cost. ``channels=(128, 128), hidden=1024`` recovers the published width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from sparsesnn.models.common import NeuronSpec, SpikingBlock, conv_bn
from sparsesnn.models.registry import MODELS, ModelSettings
from sparsesnn.neuron.layers import SeqFolded


class ConvNetSettings(ModelSettings):
    """The MNIST convolutional SNN: conv stages of 3x3 conv-BN-LIF-maxpool, an optional spiking FC, a readout."""

    channels: tuple[int, ...] = Field((32, 64), min_length=1, description="output channels of each conv stage")
    hidden: int | None = Field(None, ge=1, description="width of a spiking FC layer before the readout (None: none)")


@MODELS.register("convnet")
class ConvNet(nn.Module):
    """Two conv stages and a linear readout on ``[T, B, C, H, W]``; output ``[T, B, num_classes]``."""

    Settings: ClassVar[type[ModelSettings]] = ConvNetSettings

    @classmethod
    def from_settings(cls, s: ConvNetSettings, neuron: NeuronSpec | None = None) -> ConvNet:
        return cls(s.in_channels, s.num_classes, s.input_size, s.channels, s.hidden, neuron, s.spiking_output)

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        channels: Sequence[int] = (32, 64),
        hidden: int | None = None,
        neuron: NeuronSpec | None = None,
        spiking_output: bool = False,
    ) -> None:
        super().__init__()
        spec = neuron or NeuronSpec()
        stages: list[nn.Module] = []
        c_in, size = in_channels, input_size
        for c_out in channels:
            stages.append(SpikingBlock(conv_bn(c_in, c_out), spec.build()))
            stages.append(SeqFolded(nn.MaxPool2d(2)))
            c_in, size = c_out, size // 2
        self.features = nn.Sequential(*stages)
        flat = c_in * size * size
        head: list[nn.Module] = []
        if hidden:
            head.append(SpikingBlock([nn.Linear(flat, hidden)], spec.build()))
            flat = hidden
        head.append(SeqFolded(nn.Linear(flat, num_classes)))
        if spiking_output:
            head.append(spec.build())
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(2))
