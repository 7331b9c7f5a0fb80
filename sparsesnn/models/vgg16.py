"""``vgg16``: spiking VGG-16 for CIFAR, the network of the SNN lottery-ticket baseline.

Follows Kim, Li, Park, Venkatesha, Yin, Panda, "Exploring Lottery Ticket Hypothesis in Spiking Neural Networks"
(ECCV 2022), code ``Intelligent-Computing-Lab-Yale/Exploring-Lottery-Ticket-Hypothesis-in-SNNs``,
``archs/cifarsvhn/vgg.py`` (``vgg16_bn``): VGG configuration "D"::

    64 64 P 128 128 P 256 256 256 P 512 512 512 P 512 512 512 P   ->   FC 512 * (input_size / 32)^2 -> classes

with every conv ``Conv2d(3x3, bias=True) + BatchNorm2d + LIF`` (SpikingJelly ``LIFNode(tau=4/3, v_threshold=1,
v_reset=0, ATan, detach_reset=True)``) and the compact single-FC readout (analog output). Initialisation as in that
code: Kaiming-normal (fan_out) convs with zero bias, BN weight 1 / bias 0, FC weights N(0, 0.01) with zero bias.

Choices, all options:

* ``pool="max"`` (default, as in the LTH code) or ``"avg"``. Max pooling of spike maps gives spikes again, so the
  next conv stays accumulate-only; average pooling (Rathi et al., ICLR 2020; TET's VGGSNN) gives fractions
  ``k/4`` and smoother gradients.
* The classifier is the compact ``512 -> classes`` by default. ``hidden=(4096, 4096), dropout=0.5`` gives the
  classifier of Rathi et al.'s hybrid-conversion VGG-16 (``nitin-rathi/hybrid-snn-conversion``, 4096-4096 with
  dropout 0.5). Their feature stack drops the last pool (so their first FC is ``512*2*2 -> 4096``), has no BN and
  no biases; we keep the five pools of configuration "D" so the feature stack is the same in both heads. Dropout
  draws a fresh mask at every time step.
* The conv bias before BN is redundant (BN removes it) but is kept to match the reference parameter count.

Parameter counts (3x32x32, 10 classes): 14,728,266 with the compact head, of which 14,714,688 are the conv
weights and biases, the familiar VGG-16 feature-stack figure (torchvision ``vgg16().features``); with
``hidden=(4096, 4096)`` it is 33,646,666.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from sparsesnn.models.common import NeuronSpec, SpikingBlock
from sparsesnn.models.registry import MODELS, ModelSettings
from sparsesnn.neuron.layers import SeqFolded
from sparsesnn.neuron.surrogates import ATan

_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: ``P`` marks a 2x2 pool; integers are the output widths of 3x3 conv-BN-LIF layers (configuration "D").
VGG16_CFG: tuple[int | str, ...] = tuple(item for stage in _VGG16_STAGES for item in (*stage, "P"))

#: The LTH code's neuron: SpikingJelly ``LIFNode(tau=4/3, v_threshold=1, v_reset=0, ATan(), detach_reset=True)``.
VGG16_NEURON = NeuronSpec(
    kind="lif", tau=4.0 / 3.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=True, surrogate=ATan(2.0)
)

PoolKind = Literal["max", "avg"]


def vgg_features(
    cfg: Sequence[int | str],
    in_channels: int,
    input_size: int,
    neuron: NeuronSpec,
    pool: PoolKind = "avg",
    conv_bias: bool = True,
) -> tuple[nn.Sequential, int]:
    """Build a VGG feature stack on ``[T, B, C, H, W]`` from ``cfg`` and return it with its flattened output size.

    ``cfg`` holds conv widths (``Conv3x3 + BN + neuron``) and ``"P"`` for a 2x2 pool of kind ``pool``.
    """
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    layers: list[nn.Module] = []
    c_in, size = in_channels, input_size
    for item in cfg:
        if item == "P":
            if size < 2:
                raise ValueError(f"input_size {input_size} is too small for the pools of {list(cfg)}")
            layers.append(SeqFolded(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)))
            size //= 2
        elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
            conv = nn.Conv2d(c_in, item, 3, 1, 1, bias=conv_bias)
            layers.append(SpikingBlock([conv, nn.BatchNorm2d(item)], neuron.build()))
            c_in = item
        else:
            raise ValueError(f"cfg entries must be positive ints or 'P', got {item!r}")
    return nn.Sequential(*layers), c_in * size * size


class VGG16Settings(ModelSettings):
    """Spiking VGG-16 (configuration "D" with BN) for 32x32 input, as in the SNN lottery-ticket code."""

    in_channels: int = Field(3, ge=1, description="input channels (from the dataset)")
    input_size: int = Field(32, ge=1, description="input height = width (from the dataset)")
    cfg: tuple[int | str, ...] = Field(VGG16_CFG, description="conv widths, 'P' for a 2x2 pooling layer")
    pool: PoolKind = Field("max", description="pooling: max or avg")
    hidden: tuple[int, ...] = Field((), description="widths of spiking FC layers before the readout")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before each FC layer")
    conv_bias: bool = Field(True, description="convs with a bias")


@MODELS.register("vgg16")
class VGG16(nn.Module):
    """Spiking VGG-16 on ``[T, B, C, H, W]``; output ``[T, B, num_classes]``."""

    Settings: ClassVar[type[ModelSettings]] = VGG16Settings

    @classmethod
    def from_settings(cls, s: VGG16Settings, neuron: NeuronSpec | None = None) -> VGG16:
        return cls(
            s.in_channels,
            s.num_classes,
            s.input_size,
            s.cfg,
            s.pool,
            s.hidden,
            s.dropout,
            s.conv_bias,
            neuron,
            s.spiking_output,
        )

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
        cfg: Sequence[int | str] = VGG16_CFG,
        pool: PoolKind = "max",
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        conv_bias: bool = True,
        neuron: NeuronSpec | None = None,
        spiking_output: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        spec = neuron or VGG16_NEURON
        self.features, flat = vgg_features(cfg, in_channels, input_size, spec, pool, conv_bias)
        head: list[nn.Module] = []
        for h in hidden:
            head.append(SpikingBlock([nn.Linear(flat, h)], spec.build()))
            if dropout > 0:
                head.append(SeqFolded(nn.Dropout(dropout)))
            flat = h
        head.append(SeqFolded(nn.Linear(flat, num_classes)))
        if spiking_output:
            head.append(spec.build())
        self.classifier = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(2))
