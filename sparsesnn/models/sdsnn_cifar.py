"""``sdsnn_cifar``: the CIFAR-10 network of SD-SNN (Han, Zhao, Zeng, Pan, arXiv 2211.12219; Information Sciences 2025).

Follows the authors' released code, BrainCog ``examples/Structural_Development/SD-SNN/snn_model.py``
(``my_cifar_model``), layer for layer::

    conv3-128  conv3-128  maxpool2  conv3-256  conv3-256  maxpool2  conv3-512  conv3-512
    flatten  FC 512*8*8 -> 512 (LIF)  FC 512 -> 10 (LIF)

There are exactly two pools (none after the last conv pair): 32 -> 16 -> 8, so the first FC sees ``512 * 8 * 8``.

* conv layers are BrainCog ``BaseConvModule``: ``Conv2d(bias=False) + BatchNorm2d + PLIFNode`` with PLIFNode's
  defaults: threshold 1, initial tau 2 (``1/tau = sigmoid(w)``), ATan surrogate with alpha 2, hard reset to 0 with
  the reset detached from the graph (``mem * (1 - spike.detach())``).
* FC layers are ``BaseLinearModule``: ``Linear(bias=True) + LIFNode`` with LIFNode's defaults: threshold 0.5, tau 2,
  input decay (``mem += (x - mem) / tau``), hard reset to 0, detached reset.
* The readout is the mean over T of the **spikes** of the last LIF (the paper's loss is an MSE to one-hot on that
  mean), hence ``spiking_output=True`` by default, the last neuron being the FC LIF at threshold 0.5.

Where we differ from the released code:

* BrainCog's LIFNode uses the ``QGateGrad`` surrogate; our surrogate set has no such function, so the FC neurons use
  ATan(alpha=2) like the conv neurons.
* BrainCog's PLIFNode also learns the ATan ``alpha`` (``requires_grad=True``); ours keeps it fixed at 2 and learns
  only ``w``, one per layer as in the code.
* For input wider than 32 pixels (DVS) the code interpolates every frame to 64x64; we take ``input_size`` instead
  and size the first FC from it (``512 * (input_size // 4) ** 2``); resizing belongs to the data pipeline.

Full size (3x32x32, 10 classes) has 21,361,040 trainable parameters (computed in ``tests/test_models.py``); 78.5 %
of them are in the 32,768 -> 512 FC, the layer the released code's range dynamics act on.
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
from sparsesnn.neuron.surrogates import ATan

#: Conv neurons of the released code: BrainCog ``PLIFNode()`` defaults.
SDSNN_CONV_NEURON = NeuronSpec(
    kind="plif", tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=True, surrogate=ATan(2.0)
)
#: FC neurons of the released code: BrainCog ``LIFNode()`` defaults (surrogate: ATan instead of QGateGrad).
SDSNN_FC_NEURON = NeuronSpec(
    kind="lif", tau=2.0, v_threshold=0.5, v_reset=0.0, decay_input=True, detach_reset=True, surrogate=ATan(2.0)
)


class SDSNNCifarSettings(ModelSettings):
    """SD-SNN's CIFAR-10 net (BrainCog ``my_cifar_model``); readout = mean over T of the output spikes. From a
    config, ``[neuron]`` (when given) sets both the conv and the FC neurons."""

    in_channels: int = Field(3, ge=1, description="input channels (from the dataset)")
    input_size: int = Field(32, ge=1, description="input height = width (from the dataset)")
    channels: tuple[int, ...] = Field((128, 256, 512), description="output channels of the conv stages")
    hidden: int = Field(512, ge=1, description="width of the spiking FC layer")
    spiking_output: bool = Field(True, description="the readout fires (the paper's MSE on rates)")


@MODELS.register("sdsnn_cifar")
class SDSNNCifar(nn.Module):
    """Stages of two ``conv3-BN-PLIF`` with a 2x2 max pool between stages, then ``FC-LIF`` and the readout FC.

    Input ``[T, B, C, H, W]``; output ``[T, B, num_classes]`` (spikes when ``spiking_output``).

    Args:
        channels: widths of the conv stages, two convs each; a max pool follows every stage but the last.
        hidden: width of the hidden FC layer.
        neuron: conv neurons (default :data:`SDSNN_CONV_NEURON`); when given and ``fc_neuron`` is not, it is used
            for every neuron of the model (as the config's ``[neuron]`` section promises).
        fc_neuron: neurons of the FC layers, the output neuron included (default :data:`SDSNN_FC_NEURON`).
    """

    Settings: ClassVar[type[ModelSettings]] = SDSNNCifarSettings

    @classmethod
    def from_settings(cls, s: SDSNNCifarSettings, neuron: NeuronSpec | None = None) -> SDSNNCifar:
        return cls(s.in_channels, s.num_classes, s.input_size, s.channels, s.hidden, neuron, None, s.spiking_output)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
        channels: Sequence[int] = (128, 256, 512),
        hidden: int = 512,
        neuron: NeuronSpec | None = None,
        fc_neuron: NeuronSpec | None = None,
        spiking_output: bool = True,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one conv stage")
        n_pools = len(channels) - 1
        if input_size < 2**n_pools:
            raise ValueError(f"input_size {input_size} is too small for {n_pools} 2x2 pools")
        conv_spec = neuron or SDSNN_CONV_NEURON
        fc_spec = fc_neuron or (neuron if neuron is not None else SDSNN_FC_NEURON)
        layers: list[nn.Module] = []
        c_in, size = in_channels, input_size
        for i, c_out in enumerate(channels):
            layers.append(SpikingBlock(conv_bn(c_in, c_out), conv_spec.build()))
            layers.append(SpikingBlock(conv_bn(c_out, c_out), conv_spec.build()))
            if i < n_pools:
                layers.append(SeqFolded(nn.MaxPool2d(2)))
                size //= 2
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc_hidden = SpikingBlock([nn.Linear(c_in * size * size, hidden)], fc_spec.build())
        self.classifier = SeqFolded(nn.Linear(hidden, num_classes))
        self.output_neuron = fc_spec.build() if spiking_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(2)
        return self.output_neuron(self.classifier(self.fc_hidden(x)))
