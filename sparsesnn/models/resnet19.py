"""``resnet19``: the spiking ResNet-19 for CIFAR of tdBN and TET, used by ESL-SNN and the PQ-index paper.

Architecture of Zheng, Wu, Deng, Hu, Li, "Going Deeper With Directly-Trained Larger Spiking Neural Networks"
(AAAI 2021, tdBN), table of ResNet-19::

    conv3x3-128 | BasicBlock x3 @128 (stride 1) | x3 @256 (stride 2) | x2 @512 (stride 2) | global avg pool
    | FC 512 -> 256 (LIF) | FC 256 -> num_classes

Block details follow the released code of TET (Deng et al., ICLR 2022, ``Gus-Lab/temporal_efficient_training``,
``models/resnet_models.py``): a spiking BasicBlock is ``conv3x3-BN-LIF-conv3x3-BN``, plus the shortcut
(``conv1x1-BN`` when the stride or width changes, identity otherwise), then a LIF after the addition; convs have no
bias, the FCs do; the readout is analog (TET's loss works on per-step logits). Default PyTorch initialisation, as
in that code. Neurons are TET's ``LIFSpike`` (:data:`~sparsesnn.models.vggsnn.TET_NEURON`: ``mem = 0.5 mem + x``,
threshold 1, hard reset; ATan surrogate in place of TET's triangle). BatchNorm is plain ``BatchNorm2d`` over
``T*B`` as in TET's code, not tdBN's threshold-scaled variant.

The stem: the tdBN table gives 128 channels, which we use by default; TET's released code builds a 64-channel stem
(``self.inplanes = 64``), so its first stage starts with a ``conv1x1-BN`` shortcut from 64 to 128. Pass
``stem_channels=64`` to get that network. Parameter counts (3x32x32, 10 classes): 12,697,994 with the 128 stem,
12,630,858 with the 64 stem; the second is the "12.63 M" quoted for ResNet-19 (tdBN, TET) in later comparison tables
(e.g. Spikformer, ICLR 2023) -- both are computed in ``tests/test_models.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from sparsesnn.models.common import NeuronSpec, SpikingBlock, conv_bn
from sparsesnn.models.registry import MODELS, ModelSettings
from sparsesnn.models.vggsnn import TET_NEURON
from sparsesnn.neuron.layers import SeqFolded


class SpikingBasicBlock(nn.Module):
    """``LIF(conv-BN(LIF(conv-BN(x))) + shortcut(x))`` on ``[T, B, C, H, W]``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, neuron: NeuronSpec) -> None:
        super().__init__()
        self.conv1 = SpikingBlock(conv_bn(in_ch, out_ch, 3, stride), neuron.build())
        self.conv2 = SeqFolded(*conv_bn(out_ch, out_ch, 3, 1))
        self.shortcut: nn.Module = (
            SeqFolded(*conv_bn(in_ch, out_ch, 1, stride)) if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.neuron = neuron.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet19Settings(ModelSettings):
    """tdBN/TET ResNet-19 for CIFAR. ``input_size`` is accepted for a uniform interface: the global average pool
    makes the network independent of it (it must survive the strides: at least ``prod(strides)``)."""

    in_channels: int = Field(3, ge=1, description="input channels (from the dataset)")
    input_size: int = Field(32, ge=1, description="input height = width (from the dataset; at least the strides)")
    stem_channels: int = Field(128, ge=1, description="channels of the stem conv")
    widths: tuple[int, ...] = Field((128, 256, 512), description="channels of each stage")
    blocks: tuple[int, ...] = Field((3, 3, 2), description="basic blocks in each stage")
    strides: tuple[int, ...] = Field((1, 2, 2), description="stride of each stage's first block")
    hidden: int = Field(256, ge=1, description="width of the spiking FC layer before the readout")

    @model_validator(mode="after")
    def _fits(self) -> ResNet19Settings:
        if not len(self.widths) == len(self.blocks) == len(self.strides):
            raise ValueError("widths, blocks and strides need one entry per stage")
        if self.input_size < math.prod(self.strides):
            raise ValueError(f"input_size {self.input_size} is smaller than the total stride {math.prod(self.strides)}")
        return self


@MODELS.register("resnet19")
class ResNet19(nn.Module):
    """Spiking ResNet-19 on ``[T, B, C, H, W]``; output ``[T, B, num_classes]``.

    Args:
        stem_channels: width of the first conv (128 in the tdBN table, 64 in TET's code).
        widths, blocks, strides: per stage, the width, the number of BasicBlocks and the stride of the first one.
        hidden: width of the spiking FC layer before the readout.
    """

    Settings: ClassVar[type[ModelSettings]] = ResNet19Settings

    @classmethod
    def from_settings(cls, s: ResNet19Settings, neuron: NeuronSpec | None = None) -> ResNet19:
        return cls(
            s.in_channels,
            s.num_classes,
            s.stem_channels,
            s.widths,
            s.blocks,
            s.strides,
            s.hidden,
            neuron,
            s.spiking_output,
        )

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        stem_channels: int = 128,
        widths: Sequence[int] = (128, 256, 512),
        blocks: Sequence[int] = (3, 3, 2),
        strides: Sequence[int] = (1, 2, 2),
        hidden: int = 256,
        neuron: NeuronSpec | None = None,
        spiking_output: bool = False,
    ) -> None:
        super().__init__()
        if not (len(widths) == len(blocks) == len(strides)) or not widths:
            raise ValueError(
                f"widths, blocks and strides must have the same non-zero length, got {widths}, {blocks}, {strides}"
            )
        if any(b < 1 for b in blocks):
            raise ValueError(f"every stage needs at least one block, got {blocks}")
        spec = neuron or TET_NEURON
        self.stem = SpikingBlock(conv_bn(in_channels, stem_channels, 3, 1), spec.build())
        stages: list[nn.Module] = []
        c_in = stem_channels
        for width, n_blocks, stride in zip(widths, blocks, strides, strict=True):
            stage = [SpikingBasicBlock(c_in, width, stride, spec)]
            stage += [SpikingBasicBlock(width, width, 1, spec) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = width
        self.layers = nn.Sequential(*stages)
        self.pool = SeqFolded(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc_hidden = SpikingBlock([nn.Linear(c_in, hidden)], spec.build())
        self.classifier = SeqFolded(nn.Linear(hidden, num_classes))
        self.output_neuron = spec.build() if spiking_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x)))
        return self.output_neuron(self.classifier(self.fc_hidden(x)))
