"""The structure learners and metrics work unchanged on SpikingJelly and snnTorch networks (dev extra)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.metrics import FiringRateMonitor, SynapticOpsMonitor
from sparsesnn.sparse import METHODS

pytestmark = pytest.mark.peers


def spikingjelly_net() -> nn.Module:
    sj = pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    net = nn.Sequential(
        layer.Conv2d(1, 6, 3, padding=1, bias=False),
        layer.BatchNorm2d(6),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(6 * 4 * 4, 5),
    )
    functional.set_step_mode(net, "m")
    assert sj is not None
    return net


class SnnTorchNet(nn.Module):
    """The usual snnTorch style: a Python loop over time calling each layer once per step."""

    def __init__(self) -> None:
        super().__init__()
        snn = pytest.importorskip("snntorch")
        from snntorch import surrogate

        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.5, spike_grad=surrogate.atan())
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.lif2 = snn.Leaky(beta=0.5, spike_grad=surrogate.atan())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = []
        for t in range(x.shape[0]):
            s1, mem1 = self.lif1(nn.functional.max_pool2d(self.conv(x[t]), 2), mem1)
            _s2, mem2 = self.lif2(self.fc(s1.flatten(1)), mem2)
            out.append(mem2)
        return torch.stack(out)


def _reset(net: nn.Module) -> None:
    if type(net).__module__ == "torch.nn.modules.container":
        from spikingjelly.activation_based import functional

        functional.reset_net(net)


@pytest.mark.parametrize("builder", [spikingjelly_net, SnnTorchNet], ids=["spikingjelly", "snntorch"])
@pytest.mark.parametrize("method", ["rigl", "set", "gmp"])
def test_learners_run_unchanged_on_peer_networks(builder, method):
    torch.manual_seed(0)
    net = builder()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    kw = {"update_every": 2} if method != "set" else {"update_every": 2, "update_unit": "steps"}
    learner = METHODS[method](net, opt, density=0.3, total_steps=10, dense_first=False, **kw)
    assert len(learner.layers) == 2
    counts = [layer.active() for layer in learner.layers]
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 8, 1, 8, 8, generator=g) < 0.5).float()
    y = torch.randint(0, 5, (8,), generator=g)
    losses = []
    for _ in range(10):
        _reset(net)
        loss = nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        learner.step()
        losses.append(loss.item())
        for layer in learner.layers:
            assert torch.all(layer.weight[~layer.mask] == 0)
        if method != "gmp":
            assert [layer.active() for layer in learner.layers] == counts
    assert losses[-1] < losses[0]
    if method == "gmp":
        assert learner.density() == pytest.approx(0.3, abs=0.02)
    else:
        assert learner.history


@pytest.mark.parametrize("builder", [spikingjelly_net, SnnTorchNet], ids=["spikingjelly", "snntorch"])
def test_metrics_see_peer_neurons_and_layers(builder):
    torch.manual_seed(0)
    net = builder()
    rates, ops = FiringRateMonitor(net), SynapticOpsMonitor(net)
    x = (torch.rand(4, 2, 1, 8, 8) < 0.5).float()
    _reset(net)
    with torch.no_grad(), rates.active(), ops.active():
        net(x)
    assert rates.rates(), "no spiking layer recognised"
    result = ops.result(n_samples=2)
    assert result["Effective_ACs"] > 0 and set(result["layers"]) == {
        n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    }
