"""Connections and synaptic operations against brute-force counts."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from sparsesnn.metrics import SynapticOpsMonitor, connections, energy_uj, fan_out_map


def brute_force_conv_ops(x: torch.Tensor, conv: nn.Conv2d) -> float:
    """Sum over input elements of value x (count) times live synapses to outputs that are inside the map."""
    w = conv.weight.detach()
    o_ch, c_per_g, kh, kw = w.shape
    groups = conv.groups
    sh, sw = conv.stride
    ph, pw = conv.padding
    dh, dw = conv.dilation
    _, _, h, wd = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    total = 0.0
    for o, oy, ox, ci, ky, kx in itertools.product(
        range(o_ch), range(oh), range(ow), range(c_per_g), range(kh), range(kw)
    ):
        if w[o, ci, ky, kx] == 0:
            continue
        c_in = (o // (o_ch // groups)) * c_per_g + ci
        iy, ix = oy * sh - ph + ky * dh, ox * sw - pw + kx * dw
        if 0 <= iy < h and 0 <= ix < wd:
            total += float(x[:, c_in, iy, ix].sum())
    return total


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2, padding=0),
        dict(kernel_size=(3, 2), padding=(1, 2), dilation=(2, 1)),
        dict(kernel_size=3, padding=1, groups=2),
    ],
)
def test_conv_effective_ops_equal_brute_force(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, bias=False, **kw)
    with torch.no_grad():
        conv.weight.mul_((torch.rand_like(conv.weight) < 0.4).float())  # random mask
    spikes = (torch.rand(3, 2, 4, 7, 6) < 0.3).float()  # [T, B, C, H, W]
    monitor = SynapticOpsMonitor(conv)
    with monitor.active():
        conv(spikes.flatten(0, 1))
    result = monitor.result(n_samples=2)
    expected = brute_force_conv_ops(spikes.flatten(0, 1), conv) / 2
    assert result["Effective_ACs"] == pytest.approx(expected)
    assert result["Effective_MACs"] == 0.0


def test_small_network_ops_with_analog_first_layer():
    torch.manual_seed(1)
    conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=False)
    conv2 = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    fc = nn.Linear(5 * 6 * 6, 4)
    for layer in (conv2, fc):
        with torch.no_grad():
            layer.weight.mul_((torch.rand_like(layer.weight) < 0.5).float())
    x = torch.randn(4, 1, 6, 6)  # analog input
    s1 = (torch.rand(4, 3, 6, 6) < 0.2).float()
    s2 = (torch.rand(4, 5, 6, 6) < 0.2).float()
    model = nn.ModuleDict({"c1": conv1, "c2": conv2, "fc": fc})
    monitor = SynapticOpsMonitor(model)
    with monitor.active():
        conv1(x)
        conv2(s1)
        fc(s2.flatten(1))
    r = monitor.result(n_samples=4)
    macs = brute_force_conv_ops((x != 0).float(), conv1) / 4
    acs = brute_force_conv_ops(s1, conv2) / 4 + float((s2.flatten(1) @ (fc.weight != 0).float().sum(0)).sum()) / 4
    assert r["Effective_MACs"] == pytest.approx(macs)
    assert r["Effective_ACs"] == pytest.approx(acs)
    dense = (
        brute_force_conv_ops(torch.ones(4, 1, 6, 6), nn.Conv2d(1, 3, 3, padding=1, bias=False))
        + brute_force_conv_ops(torch.ones(4, 3, 6, 6), nn.Conv2d(3, 5, 3, padding=1, bias=False))
        + 4 * fc.weight.numel()
    ) / 4
    assert r["Dense"] == pytest.approx(dense)
    assert r["energy_uJ"] == pytest.approx(energy_uj(acs, macs)) and energy_uj(1e6, 0) == pytest.approx(0.9)


def test_time_major_input_counts_like_folded():
    fc = nn.Linear(6, 3)
    spikes = (torch.rand(5, 2, 6) < 0.5).float()
    a, b = SynapticOpsMonitor(fc), SynapticOpsMonitor(fc)
    with a.active():
        fc(spikes)
    with b.active():
        fc(spikes.flatten(0, 1))
    assert a.result(2)["Effective_ACs"] == b.result(2)["Effective_ACs"] == pytest.approx(float(spikes.sum()) * 3 / 2)


def test_dead_neuron_costs_nothing():
    fc = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        fc.weight[1] = 0  # output neuron 1 has no synapses
    fan = fan_out_map(fc, (4,), fc.weight != 0)
    assert fan.tolist() == [2.0, 2.0, 2.0, 2.0]


def test_connections_counts_nonzero():
    fc = nn.Linear(4, 2)
    with torch.no_grad():
        fc.weight[0, :3] = 0
    c = connections(nn.Sequential(fc))
    assert c["active"] == 5 and c["total"] == 8 and c["layers"]["0"] == {"active": 5, "total": 8}


def test_ops_monitor_works_under_no_grad():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    monitor = SynapticOpsMonitor(conv)
    with torch.no_grad(), monitor.active():
        conv((torch.rand(2, 2, 5, 5) < 0.5).float())
        assert monitor.result(2)["Effective_ACs"] > 0
