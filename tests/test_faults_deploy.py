"""Faults found by using deploy as a new user would: BatchNorm folded where it does not act on the layer's output
channels, or into a layer used twice; every rewrite is guarded by a whole-model equality check on the example."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.deploy import api
from sparsesnn.deploy.api import DeployMismatchError, deploy
from sparsesnn.deploy.passes import fold_norms
from sparsesnn.neuron.layers import SeqFolded
from sparsesnn.neuron.lif import LIF


def _trained(bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.batchnorm._BatchNorm:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)  # type: ignore[union-attr]
        bn.running_var.uniform_(0.2, 3)  # type: ignore[union-attr]
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn.eval()


class Readout(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


def _last_axis_linear(channels: int, length: int) -> nn.Module:
    """Input [T, B, C, L]: a Linear over the last axis (L -> L), then BatchNorm1d(C) over axis 1 of [T*B, C, L]."""
    torch.manual_seed(0)
    return nn.Sequential(
        SeqFolded(nn.Linear(length, length), _trained(nn.BatchNorm1d(channels))), LIF(backend="eager"), Readout()
    ).eval()


def test_a_linear_over_the_last_axis_keeps_its_norm() -> None:
    model = _last_axis_linear(16, 16)
    x = torch.randn(4, 8, 16, 16)
    deployed, report = deploy(model, x, choices={})
    assert report.folded_norms == []
    assert "0.1" in report.not_folded and "3-D" in report.not_folded["0.1"]
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_linear_over_the_last_axis_with_other_channels_deploys() -> None:
    model = _last_axis_linear(6, 10)  # C != L: the fold used to raise a bare tensor-size error
    x = torch.randn(3, 2, 6, 10)
    deployed, report = deploy(model, x, force=True)
    assert "0.1" in report.not_folded
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_linear_on_flat_features_is_still_folded() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(SeqFolded(nn.Linear(12, 8), _trained(nn.BatchNorm1d(8))), LIF(backend="eager")).eval()
    x = torch.randn(4, 3, 12)
    deployed, report = deploy(model, x, choices={})
    assert report.folded_norms == ["0.1"] and report.not_folded == {}
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="folded"):  # the fold assumed [N, features]: other ranks are refused
            deployed[0][1](torch.randn(2, 8, 5))


class TwoPaths(nn.Module):
    """One conv used in two paths, one of them followed by BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.normed = nn.Sequential(self.conv, _trained(nn.BatchNorm2d(4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normed(x) + self.conv(x)).flatten(1)


class CalledTwice(nn.Module):
    """A Sequential(conv, bn) whose conv is also called on its own through indexing (registered once)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), _trained(nn.BatchNorm2d(4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.block(x) + self.block[0](x)).flatten(1)


@pytest.mark.parametrize("cls", [TwoPaths, CalledTwice])
def test_a_conv_used_twice_is_not_folded(cls: type[nn.Module]) -> None:
    torch.manual_seed(2)
    model = cls().eval()
    x = torch.randn(5, 2, 6, 6)
    deployed, report = deploy(model, x, choices={})
    assert report.folded_norms == []
    (reason,) = report.not_folded.values()
    assert "more than" in reason or "twice" in reason
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), atol=1e-5, rtol=1e-5)


def test_fold_norms_reports_why_it_left_a_norm() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), _trained(nn.BatchNorm2d(3)))
    folded, not_folded = fold_norms(model, torch.randn(2, 1, 5, 5))
    assert folded == [] and "2" in not_folded and "Conv2d or Linear" in not_folded["2"]


def test_a_rewrite_that_changes_the_outputs_is_an_error_naming_the_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(SeqFolded(nn.Conv2d(1, 4, 3, padding=1)), LIF(backend="eager"), Readout()).eval()
    x = torch.randn(3, 2, 1, 6, 6)

    def broken_pools(model: nn.Module, backend: str = "auto") -> list[str]:
        conv = model[0][0]
        with torch.no_grad():
            conv.weight.mul_(3.0)
        return []

    monkeypatch.setattr(api, "replace_pools", broken_pools)
    with pytest.raises(DeployMismatchError, match="pools"):
        deploy(model, x, choices={})
