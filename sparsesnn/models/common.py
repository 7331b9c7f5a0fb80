"""Building blocks shared by the model zoo: the neuron spec and conv/linear blocks on time-major input."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from torch import nn

from sparsesnn.layers import SeqFolded
from sparsesnn.neurons import LIF, PLIF, Backend
from sparsesnn.surrogates import ATan, Surrogate


@dataclass(frozen=True)
class NeuronSpec:
    """How to build the spiking neurons of a model.

    ``kind`` is "lif" or "plif" (learnable tau, ``tau`` is its initial value); ``v_reset=None`` means soft reset.
    """

    kind: Literal["lif", "plif"] = "lif"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: Surrogate = field(default_factory=ATan)
    backend: Backend = "auto"

    def build(self) -> LIF:
        cls = PLIF if self.kind == "plif" else LIF
        if self.kind not in ("lif", "plif"):
            raise ValueError(f"neuron kind must be 'lif' or 'plif', got {self.kind!r}")
        return cls(
            self.tau, self.v_threshold, self.v_reset, self.decay_input, self.detach_reset, self.surrogate, self.backend
        )

    def with_(self, **changes: object) -> NeuronSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


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
