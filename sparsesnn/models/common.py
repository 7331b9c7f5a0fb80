"""Building blocks shared by the model zoo: conv/linear blocks on time-major input (and the neuron spec, from
:mod:`sparsesnn.neuron.kinds`)."""

from __future__ import annotations

from torch import nn

from sparsesnn.neuron.kinds import NeuronSpec
from sparsesnn.neuron.layers import SeqFolded

__all__ = ["NeuronSpec", "SpikingBlock", "conv_bn", "count_parameters"]


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int | None = None) -> list[nn.Module]:
    """``Conv2d(bias=False) + BatchNorm2d`` as a list, to be wrapped in a :class:`SeqFolded`."""
    pad = kernel // 2 if padding is None else padding
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, pad, bias=False), nn.BatchNorm2d(out_ch)]


class SpikingBlock(nn.Sequential):
    """``SeqFolded(stateless layers) -> neuron``, the unit most SNNs are stacked from."""

    def __init__(self, stateless: list[nn.Module], neuron: nn.Module) -> None:
        super().__init__(SeqFolded(*stateless), neuron)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
