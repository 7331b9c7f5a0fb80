"""A user's own neuron is seen by the metrics once declared, an undeclared one is reported instead of silently giving
empty rates, and compaction names neuron state carried between forward calls as the cause (issue 23, items 5, 6)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import sparsesnn
from sparsesnn.metrics import FiringRateMonitor
from sparsesnn.neuron.spiking import is_spiking
from sparsesnn.sparse.shrink import StatefulModelError, compact


class StepNeuron(nn.Module):
    """A hand-written stateless neuron: Heaviside of the input (time-major, a spike wherever x > 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).to(x.dtype)


@sparsesnn.spiking_neuron
class DeclaredNeuron(StepNeuron):
    pass


def mlp(neuron: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), neuron(), nn.Linear(8, 3))


def measured_rates(model: nn.Module) -> tuple[dict[str, float], float]:
    monitor = FiringRateMonitor(model)
    with monitor.active(), torch.no_grad():
        model(torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(1)) * 2)
    return monitor.rates(), monitor.mean_rate()


def test_a_declared_user_neuron_has_its_firing_rate_measured() -> None:
    model = mlp(DeclaredNeuron)
    x = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        expected = float((model[0](x) > 0.5).float().mean())
    rates, mean = measured_rates(model)
    assert rates == pytest.approx({"1": expected}) and 0.0 < mean == pytest.approx(expected)


def test_one_module_marked_spiking_is_measured_and_a_marker_can_opt_out() -> None:
    model = mlp(StepNeuron)
    sparsesnn.mark_spiking(model[1])
    assert set(measured_rates(model)[0]) == {"1"}
    assert not is_spiking(StepNeuron())  # the instance mark did not leak to the class
    lif = sparsesnn.LIF()
    assert is_spiking(lif) and not is_spiking(sparsesnn.mark_spiking(lif, False))


def test_an_undeclared_user_neuron_warns_instead_of_reporting_silence() -> None:
    model = mlp(StepNeuron)
    monitor = FiringRateMonitor(model)
    with pytest.warns(UserWarning, match=r"no spiking module recognised.*spiking_neuron"), monitor.active():
        model(torch.rand(2, 3, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per monitor
        with monitor.active():
            model(torch.rand(2, 3, 6))
    assert monitor.rates() == {}


def test_spiking_neuron_refuses_what_is_not_a_module_class() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module subclass"):
        sparsesnn.spiking_neuron(int)  # type: ignore[type-var]


# -- compaction of a model whose neurons carry state between forward calls ------------------------------------------
def spikingjelly_stateful_net() -> nn.Module:
    """A SpikingJelly multi-step net whose LIF state is reset by the training loop (functional.reset_net), not in
    forward, with 4 of the 10 hidden units dead (zero rows, zero bias)."""
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Linear(6, 10), neuron.LIFNode(tau=2.0), layer.Linear(10, 8), neuron.LIFNode(tau=2.0), layer.Linear(8, 3)
    )
    functional.set_step_mode(net, "m")
    with torch.no_grad():
        net[0].weight.mul_(6.0)
        net[2].weight.abs_().mul_(6.0)
        net[0].weight[:4] = 0.0
        net[0].bias[:4] = 0.0
    return net


@pytest.mark.peers
def test_compact_names_neuron_state_as_the_cause_and_the_fix() -> None:
    net = spikingjelly_stateful_net()
    x = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(2))
    with pytest.raises(StatefulModelError, match=r"carries state between forward calls.*reset=.*reset_net"):
        compact(net, x)


@pytest.mark.peers
def test_compact_with_a_reset_callable_removes_the_dead_units() -> None:
    from spikingjelly.activation_based import functional

    net = spikingjelly_stateful_net()
    x = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(2))
    small, report = compact(net, x, reset=functional.reset_net)
    assert report.removed == {"0": (10, 6)} and report.kept == {}
    functional.reset_net(net)
    functional.reset_net(small)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), atol=1e-6, rtol=1e-5)
