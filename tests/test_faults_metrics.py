"""Faults found by using the firing-rate monitor as a new user would: a user's own neuron next to a library LIF was
left out of the rates without a word."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import sparsesnn
from sparsesnn.metrics import FiringRateMonitor, looks_like_neuron
from sparsesnn.neuron.lif import LIF


class MyNeuron(nn.Module):
    """A user's neuron, not declared spiking."""

    def __init__(self) -> None:
        super().__init__()
        self.v_threshold = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= self.v_threshold).float()


class Thresholded(nn.Module):  # no telling name, but a v_threshold attribute
    v_threshold = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.v_threshold).float()


def _model(neuron: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), LIF(backend="eager"), nn.Linear(6, 6), neuron)


@pytest.mark.parametrize("neuron", [MyNeuron, Thresholded])
def test_an_undeclared_neuron_next_to_a_recognised_one_warns(neuron: type[nn.Module]) -> None:
    model = _model(neuron())
    monitor = FiringRateMonitor(model)
    match = rf"'3' \({neuron.__name__}\).*spiking_neuron.*mark_spiking"
    with pytest.warns(UserWarning, match=match), monitor.active():
        model(torch.randn(3, 2, 4))
    assert set(monitor.rates()) == {"1"}


def test_a_declared_or_plain_model_does_not_warn() -> None:
    for model in (
        _model(sparsesnn.mark_spiking(MyNeuron())),
        _model(sparsesnn.mark_spiking(MyNeuron(), False)),  # declared not spiking: no question left
        nn.Sequential(nn.Linear(4, 6), LIF(backend="eager"), nn.ReLU(), nn.Identity()),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with FiringRateMonitor(model).active():
                model(torch.randn(3, 2, 4))


def test_the_rule() -> None:
    assert looks_like_neuron(MyNeuron()) and looks_like_neuron(Thresholded())
    for name in ("IFNode", "MyLIF", "LIFCell2", "SpikeLayer", "ALIFNeuron"):
        assert looks_like_neuron(type(name, (nn.Module,), {})()), name
    for module in (nn.Linear(2, 2), nn.Threshold(0.1, 0.0), nn.Identity(), nn.ReLU(), nn.BatchNorm1d(2)):
        assert not looks_like_neuron(module), module
    assert not looks_like_neuron(type("Classifier", (nn.Module,), {})())
    assert not looks_like_neuron(type("Amplifier", (nn.Module,), {})())
