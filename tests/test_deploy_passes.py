"""The exact rewriting passes of sparsesnn.deploy (issue 25): each keeps the outputs of what it replaces, and deploy
re-applies recorded choices; the deploy export format round-trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.deploy.api import deploy
from sparsesnn.deploy.event_layers import EventConv2d, EventLinear, numba_available
from sparsesnn.deploy.lif import InferenceLIF
from sparsesnn.deploy.passes import StepInvariant, fold_norms, replace_neurons, replace_pools, wrap_step_invariant
from sparsesnn.deploy.pool import InferenceMaxPool2d, is_plain_max_pool
from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.neuron.functional import lif_multistep
from sparsesnn.neuron.layers import DirectEncoder, SeqFolded
from sparsesnn.neuron.lif import LIF, PLIF

BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="no numba"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v_reset", [0.0, -0.3, None])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("kind", ["lif", "plif"])
def test_inference_lif_gives_the_training_kernels_spikes(backend, v_reset, decay_input, kind) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    neuron = (
        LIF(tau=3.0, v_threshold=0.7, v_reset=v_reset, decay_input=decay_input, backend="eager")
        if kind == "lif"
        else PLIF(init_tau=2.5, v_threshold=0.7, v_reset=v_reset, decay_input=decay_input, backend="eager")
    ).eval()
    x = torch.randn(6, 3, 5, 7) * 1.5 + 0.8
    expected = neuron(x).detach()
    got = InferenceLIF(neuron, backend)(x)
    assert got.dtype == torch.float32 and got.shape == x.shape
    assert 0.05 < float(expected.mean()) < 0.95  # the inputs make it fire and stay silent
    assert torch.equal(got, expected)
    compiled = lif_multistep(x, neuron.inv_tau(), v_threshold=0.7, v_reset=0.0 if v_reset is None else v_reset,
                             decay_input=decay_input, hard_reset=v_reset is not None, backend="auto")  # fmt: skip
    assert torch.equal(got, compiled.detach())


def test_inference_lif_refuses_a_subclass_whose_forward_may_differ() -> None:
    class Mine(LIF):
        pass

    with pytest.raises(TypeError, match="LIF or PLIF"):
        InferenceLIF(Mine())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("kernel", "stride", "size"), [(2, 2, (28, 28)), (2, 2, (7, 9)), (3, 2, (11, 10)), (2, 1, (5, 6))]
)
def test_inference_max_pool_equals_torch_bit_for_bit(backend, kernel, stride, size) -> None:  # type: ignore[no-untyped-def]
    pool = nn.MaxPool2d(kernel, stride)
    x = torch.randn(3, 4, *size)
    got = InferenceMaxPool2d(pool, backend)(x)
    assert torch.equal(got, pool(x))
    # a channels-last input (an event conv's output, through the LIF) is pooled in its own layout, exactly
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got_cl = InferenceMaxPool2d(pool, backend)(x_cl)
    assert torch.equal(got_cl, pool(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_activations_pass_through_lif_and_event_conv_unchanged(backend) -> None:  # type: ignore[no-untyped-def]
    """The deployed layers take a channels-last activation as it is: InferenceLIF's spikes keep its layout and equal
    those of the NCHW copy; the event conv on a channels-last input equals the one on the NCHW copy."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 2, 8, 6, 5, generator=gen) * 1.5).contiguous()  # [T, B, C, H, W]
    x_cl = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(x.shape)
    assert not x_cl.is_contiguous()
    lif = InferenceLIF(LIF(tau=2.0), backend)
    spikes_cl = lif(x_cl)
    assert spikes_cl.stride() == x_cl.stride() and torch.equal(spikes_cl, lif(x))
    conv = nn.Conv2d(8, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_((torch.rand(conv.weight.shape, generator=gen) < 0.3).float())
    event = EventConv2d(conv, backend)
    s = spikes_cl.flatten(0, 1)
    assert not s.is_contiguous() and s.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(event(s), event(s.contiguous()))


def test_only_plain_max_pools_are_replaced() -> None:
    assert is_plain_max_pool(nn.MaxPool2d(2))
    for pool in (nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d((2, 3)),
                 nn.MaxPool2d(2, dilation=2), nn.MaxPool2d(2, return_indices=True)):  # fmt: skip
        assert not is_plain_max_pool(pool), pool
        with pytest.raises(ValueError, match="MaxPool2d"):
            InferenceMaxPool2d(pool)  # type: ignore[arg-type]
    model = nn.Sequential(nn.MaxPool2d(2), nn.MaxPool2d(2, padding=1))
    assert replace_pools(model) == ["0"]
    assert isinstance(model[0], InferenceMaxPool2d) and type(model[1]) is nn.MaxPool2d


def _trained_norm(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)  # type: ignore[union-attr]
        bn.running_var.uniform_(0.5, 2)  # type: ignore[union-attr]
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn.eval()


class ThreeBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), _trained_norm(nn.BatchNorm2d(5)))
        self.linear = nn.Sequential(nn.Linear(6, 4), _trained_norm(nn.BatchNorm1d(4)))
        self.batch_stats = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4, track_running_stats=False).eval())

    def forward(self, xv: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x, v = xv
        return self.conv(x), self.linear(v), self.batch_stats(v)


def test_fold_norms_keeps_the_outputs_and_leaves_what_it_cannot_fold() -> None:
    torch.manual_seed(0)
    model = ThreeBranches()
    conv, linear, batch_stats = model.conv, model.linear, model.batch_stats
    x, v = torch.randn(2, 3, 6, 6), torch.randn(8, 6)
    with torch.no_grad():
        expected = model((x, v))
    folded, not_folded = fold_norms(model, (x, v))  # type: ignore[arg-type]
    assert sorted(folded) == ["conv.1", "linear.1"]
    assert list(not_folded) == ["batch_stats.1"] and "running statistics" in not_folded["batch_stats.1"]
    assert isinstance(conv[1], nn.Identity) and isinstance(linear[1], nn.Identity)
    assert conv[0].bias is not None  # the norm's shift became the conv's bias
    assert isinstance(batch_stats[1], nn.BatchNorm1d)
    with torch.no_grad():
        for got, want in zip(model((x, v)), expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class CountingConv(nn.Conv2d):
    """A conv that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__(1, 2, 3, padding=1)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return super().forward(x)


def test_step_invariant_layers_compute_one_step_only_when_the_steps_are_equal() -> None:
    conv = CountingConv()
    model = nn.Sequential(SeqFolded(conv), LIF(backend="eager"))
    constant = DirectEncoder(4)(torch.randn(3, 1, 5, 5))  # [4, 3, 1, 5, 5], equal over time
    with torch.no_grad():
        expected = model(constant)
    assert wrap_step_invariant(model, constant) == ["0"]
    assert isinstance(model[0], StepInvariant)
    conv.batches.clear()
    with torch.no_grad():
        got = model(constant)
        assert conv.batches == [3]  # one step of 3 samples, not 4 x 3
        assert torch.equal(got, expected)
        varying = torch.randn(4, 3, 1, 5, 5)
        reference = nn.Sequential(SeqFolded(conv), LIF(backend="eager"))(varying)
        conv.batches.clear()
        assert torch.equal(model(varying), reference) and conv.batches == [12]
    # a group whose input varied over time on the example is left alone
    other = nn.Sequential(SeqFolded(nn.Conv2d(1, 2, 3)))
    assert wrap_step_invariant(other, torch.randn(4, 3, 1, 5, 5)) == []


def test_replace_neurons_takes_lif_and_plif_only() -> None:
    class Mine(LIF):
        pass

    model = nn.Sequential(LIF(), PLIF(), Mine(), nn.ReLU())
    assert replace_neurons(model) == ["0", "1"]
    assert isinstance(model[0], InferenceLIF) and isinstance(model[1], InferenceLIF) and type(model[2]) is Mine


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "convnet", in_channels=1, num_classes=10, input_size=8, channels=(8, 16), hidden=32,
        neuron=NeuronSpec(backend="eager"),
    ).eval()  # fmt: skip
    with torch.no_grad():
        model.features[0][0][0].weight.mul_(3.0)
        for bn in (model.features[0][0][1], model.features[2][0][1]):
            _trained_norm(bn)
    return model


def test_deploy_applies_recorded_choices_without_timing_and_refuses_unknown_layers() -> None:
    model = _convnet()
    x = DirectEncoder(4)(torch.rand(2, 1, 8, 8))
    choices = {"features.2.0.0": True, "classifier.0.0.0": False}
    deployed, report = deploy(model, x, choices=choices)
    assert isinstance(deployed.get_submodule("features.2.0.0"), EventConv2d)
    assert not isinstance(deployed.get_submodule("classifier.0.0.0"), EventLinear)
    assert report.model_ms is None and report.layers["features.2.0.0"].event
    assert report.folded_norms == ["features.0.0.1", "features.2.0.1"]
    assert report.step_invariant[0] == "features.0.0"  # (and any later group whose input stayed equal, e.g. silent)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"features\.9"):
        deploy(model, x, choices={"features.9": True})
    plain, plain_report = deploy(model, x, rewrite=False, force=True)
    assert plain_report.folded_norms == [] and not any(isinstance(m, StepInvariant) for m in plain.modules())


def test_deploy_leaves_convs_the_event_kernels_do_not_compute() -> None:
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    strided = nn.Conv2d(4, 4, 3, stride=(1, 2))
    model = nn.Sequential(SeqFolded(nn.Conv2d(1, 4, 3, padding=1), grouped, strided), LIF(backend="eager"))
    deployed, report = deploy(model, torch.randn(2, 3, 1, 8, 8), force=True)
    assert set(report.layers) == {"0.0"}  # only the plain conv
    assert deployed[0][1] is not grouped and type(deployed[0][1]) is nn.Conv2d
    assert type(deployed[0][2]) is nn.Conv2d and isinstance(deployed[0][0], EventConv2d)
