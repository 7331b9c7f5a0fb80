"""``vggsnn``: TET's VGGSNN for 48x48 event frames (DVS-CIFAR10), as used by the PQ-index paper (ICLR 2025).

Follows Deng, Li, Zhang, Gu, "Temporal Efficient Training of Spiking Neural Network via Gradient Re-weighting"
(ICLR 2022), code ``Gus-Lab/temporal_efficient_training`` (``models/VGG_models.py``, class ``VGGSNN``)::

    64C3 128C3 AP2 256C3 256C3 AP2 512C3 512C3 AP2 512C3 512C3 AP2   ->   FC 512 * 3 * 3 -> num_classes

for 2x48x48 input. Each ``C3`` is TET's ``Layer``: ``Conv2d(3x3, bias=True) + BatchNorm2d + LIFSpike``; the pools are
``AvgPool2d(2)``; the readout is an analog ``Linear`` per time step (TET's loss averages a CE over the steps). Conv
weights are Kaiming-normal (fan_out, relu) as in that code. ``input_size`` sets the FC width:
``512 * (input_size // 16) ** 2``.

TET's ``LIFSpike`` is ``mem = 0.5 * mem + x``, ``spike = H(mem - 1)``, hard reset to 0 without detaching. In our
parameterisation that is ``tau = 2`` without input decay (``H = V - V/2 + X``), threshold 1, hard reset to 0
(:data:`TET_NEURON`). Differences: TET's surrogate is a triangle of half-width 1 (``max(0, 1 - |x|)``); ours is
ATan(alpha=2), which has the same peak of 1 at the threshold, because our surrogate set has no triangle. TET fires on
``mem > thresh``, we on ``>=`` (differs only on exact ties).

The conv bias before BN is redundant (BN removes it) but is kept (``conv_bias=True``) to match the reference
parameter count: 9,271,498 for 2x48x48 input and 10 classes (computed in ``tests/test_models.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from sparsesnn.models.common import NeuronSpec
from sparsesnn.models.registry import MODELS, ModelSettings
from sparsesnn.models.vgg16 import PoolKind, vgg_features
from sparsesnn.neuron.layers import SeqFolded
from sparsesnn.neuron.surrogates import ATan

#: ``P`` marks a 2x2 pool; integers are the output widths of 3x3 conv-BN-LIF layers.
VGGSNN_CFG: tuple[int | str, ...] = (64, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P")

#: TET's ``LIFSpike(thresh=1.0, tau=0.5)``: ``mem = 0.5 * mem + x`` (tau 2, no input decay), hard reset to 0.
TET_NEURON = NeuronSpec(
    kind="lif", tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=False, detach_reset=False, surrogate=ATan(2.0)
)


class VGGSNNSettings(ModelSettings):
    """TET's VGGSNN (DVS-CIFAR10, 2x48x48 frames)."""

    in_channels: int = Field(2, ge=1, description="input channels (from the dataset)")
    input_size: int = Field(48, ge=1, description="input height = width (from the dataset)")
    cfg: tuple[int | str, ...] = Field(VGGSNN_CFG, description="conv widths, 'P' for a 2x2 pooling layer")
    pool: PoolKind = Field("avg", description="pooling: max or avg")
    conv_bias: bool = Field(True, description="convs with a bias")


@MODELS.register("vggsnn")
class VGGSNN(nn.Module):
    """VGGSNN on ``[T, B, C, H, W]``; output ``[T, B, num_classes]``."""

    Settings: ClassVar[type[ModelSettings]] = VGGSNNSettings

    @classmethod
    def from_settings(cls, s: VGGSNNSettings, neuron: NeuronSpec | None = None) -> VGGSNN:
        return cls(s.in_channels, s.num_classes, s.input_size, s.cfg, s.pool, s.conv_bias, neuron, s.spiking_output)

    def __init__(
        self,
        in_channels: int = 2,
        num_classes: int = 10,
        input_size: int = 48,
        cfg: Sequence[int | str] = VGGSNN_CFG,
        pool: PoolKind = "avg",
        conv_bias: bool = True,
        neuron: NeuronSpec | None = None,
        spiking_output: bool = False,
    ) -> None:
        super().__init__()
        spec = neuron or TET_NEURON
        self.features, flat = vgg_features(cfg, in_channels, input_size, spec, pool, conv_bias)
        self.classifier = SeqFolded(nn.Linear(flat, num_classes))
        self.output_neuron = spec.build() if spiking_output else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_neuron(self.classifier(self.features(x).flatten(2)))
