"""Event-driven inference (issue 25, first part): the event layers equal the dense ones on random masks, spike rates,
shapes, strides, paddings and dilations, with either backend, and ``deploy`` keeps a model's predictions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.data import build_dataset
from sparsesnn.deploy.api import CONTEXT_MARGIN, deploy
from sparsesnn.deploy.event_layers import EventConv2d, EventLinear, numba_available
from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.neuron.layers import DirectEncoder

BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="no numba"))]


def sparse_(module: nn.Module, density: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.mul_(torch.rand(module.weight.shape, generator=g) < density)
    return module


def spikes(shape: tuple[int, ...], rate: float, seed: int) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < rate).float()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "bias"),
    [(3, 1, 1, 1, True), (3, 2, 1, 1, False), (3, 1, 0, 1, True), (3, 2, 2, 2, True), (5, 1, 2, 1, False),
     (2, 3, 1, 1, True), (1, 1, 0, 1, True), (3, 1, (0, 2), 1, True)],
)  # fmt: skip
@pytest.mark.parametrize(("density", "rate"), [(0.05, 0.02), (0.3, 0.2), (1.0, 0.6)])
def test_event_conv_equals_the_dense_conv(backend, kernel, stride, padding, dilation, bias, density, rate) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(kernel * 7 + stride)
    conv = sparse_(nn.Conv2d(6, 9, kernel, stride, padding, dilation=dilation, bias=bias), density, 1)
    x = spikes((4, 6, 13, 10), rate, 2)
    expected = conv(x).detach()
    got = EventConv2d(conv, backend)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("density", "rate"), [(0.05, 0.02), (0.3, 0.2), (1.0, 0.6)])
def test_event_linear_equals_the_dense_linear_on_spikes_and_analog_input(backend, density, rate) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    linear = sparse_(nn.Linear(50, 12), density, 3)
    event = EventLinear(linear, backend)
    for x in (spikes((2, 5, 50), rate, 4), spikes((2, 5, 50), rate, 5) * torch.randn(2, 5, 50)):
        torch.testing.assert_close(event(x), linear(x).detach(), atol=1e-5, rtol=1e-5)
    assert event.synapses == int((linear.weight != 0).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_conv_with_whole_input_channels_pruned(backend) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, [1, 3]] = 0.0  # two input channels without a synapse: skipped whatever they carry
    x = spikes((3, 5, 9, 8), 0.3, 6)
    torch.testing.assert_close(EventConv2d(conv, backend)(x), conv(x).detach(), atol=1e-5, rtol=1e-5)


def test_event_conv_refuses_what_it_does_not_compute() -> None:
    with pytest.raises(ValueError, match="groups = 1"):
        EventConv2d(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="equal strides"):
        EventConv2d(nn.Conv2d(4, 4, 3, stride=(1, 2)))
    with pytest.raises(ValueError, match="backend must be"):
        EventLinear(nn.Linear(2, 2), "cuda")  # type: ignore[arg-type]


def sparse_convnet() -> nn.Module:
    """The MNIST convnet's layout at 8x8 (digits), its hidden conv and readout pruned to 10 %."""
    torch.manual_seed(0)
    model = build_model(
        "convnet", in_channels=1, num_classes=10, input_size=8, channels=(8, 16), neuron=NeuronSpec(backend="eager")
    ).eval()
    for module in (model.features[2][0][0], model.classifier[0][0]):
        sparse_(module, 0.1, 7)
    with torch.no_grad():
        model.features[0][0][0].weight.mul_(3.0)  # fire: about a fifth of the first layer's neurons spike
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_deploy_keeps_the_predictions_on_real_digits(backend) -> None:  # type: ignore[no-untyped-def]
    model = sparse_convnet()
    test, _ = build_dataset("digits", None, "test")
    images = torch.stack([test[i][0] for i in range(len(test))])  # type: ignore[arg-type]
    x = DirectEncoder(4)(images)  # [T, B, 1, 8, 8]
    deployed, report = deploy(model, x[:, :16], backend=backend, force=True, repeats=1)
    assert sum(isinstance(m, (EventConv2d, EventLinear)) for m in deployed.modules()) == 3  # 2 convs and the readout
    hidden = report.layers["features.2.0.0"]
    assert hidden.event and 0.0 < hidden.input_nonzero < 0.5 and hidden.weight_density == pytest.approx(0.1, abs=0.02)
    with torch.no_grad():
        expected, got = model(x), deployed(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.mean(0).argmax(-1), expected.mean(0).argmax(-1))  # all 360 test digits


def test_deploy_chooses_by_measurement() -> None:
    model = sparse_convnet()
    x = DirectEncoder(4)(torch.rand(8, 1, 8, 8))
    deployed, report = deploy(model, x, repeats=3)
    assert report.chosen in ("model", "rewritten", "deployed")
    times = {"model": report.model_ms, "rewritten": report.rewritten_ms, "deployed": report.deployed_ms}
    assert report.chosen == min((k for k in times if times[k] is not None), key=lambda k: times[k])  # the fastest
    kept = report.chosen == "deployed"
    for name, choice in report.layers.items():
        faster = choice.event_ms < 0.9 * choice.dense_ms  # alone; then checked in the whole model
        current, other = ("event", "dense") if faster else ("dense", "event")
        if choice.context_ms[other] < choice.context_ms[current] * (1.0 - CONTEXT_MARGIN):
            faster = not faster
        assert choice.event == (faster and kept), name
        if report.chosen != "model":  # (the model as given has no rewritten names)
            replaced = isinstance(deployed.get_submodule(name), (EventConv2d, EventLinear))
            assert replaced == choice.event, name
    assert set(report.as_dict()["layers"]) == set(report.layers)
    with pytest.raises(ValueError, match="margin"):
        deploy(model, x, margin=1.0)


def test_eval_deploy_on_a_trained_sparse_run(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``sparsesnn eval RUN --deploy``: a trained sparse convnet (digits), deployed, keeps the compacted model's
    predictions on the whole test split and reports both times per sample."""
    import json

    from sparsesnn.cli import main
    from tests.conftest import tiny_convnet_toml

    config = tmp_path / "c.toml"
    config.write_text(tiny_convnet_toml())
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--config", str(config), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--deploy"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 128 and result["identical_predictions"] == 128  # data.max_test_samples
    assert result["test_acc_deployed"] == result["test_acc_compacted"] > 0.8
    assert result["ms_per_sample_compacted"] > 0 and result["ms_per_sample_deployed"] > 0
    assert result["speedup"] == pytest.approx(result["ms_per_sample_compacted"] / result["ms_per_sample_deployed"])
    assert set(result["deploy"]["layers"]) == {"features.0.0.layers.0", "features.2.0.0", "classifier.0.0"}
    deploy_report = result["deploy"]
    if any(layer["event"] for layer in deploy_report["layers"].values()):  # kept only where the whole model won
        assert deploy_report["chosen"] == "deployed"
        assert deploy_report["deployed_ms"] < min(deploy_report["rewritten_ms"], deploy_report["model_ms"])
    if deploy_report["chosen"] != "model":
        assert deploy_report["folded_norms"] == ["features.0.0.1", "features.2.0.1"]
        assert deploy_report["inference_neurons"] == ["features.0.1", "features.2.1"]

    # the deploy export format: the model, the choices measured here and the example; read back with those choices
    from sparsesnn.deploy.api import load_deployed
    from sparsesnn.interop.export import prepare_export

    assert main(["export", str(run), "--format", "deploy"]) == 0
    out = capsys.readouterr().out
    path = run / "model.deploy.pt"
    assert str(path) in out and "deploy: event-driven layers" in out
    forced = {"features.2.0.0": True, "classifier.0.0": True}  # re-write the choices: both applied on load
    payload = torch.load(path, weights_only=True)
    payload["meta"]["deploy"]["layers"] = {k: {**v, "event": forced.get(k, False)}
                                           for k, v in payload["meta"]["deploy"]["layers"].items()}  # fmt: skip
    torch.save(payload, path)
    loaded, report, meta = load_deployed(path)
    assert meta["deploy"]["layers"].keys() == report.layers.keys()
    assert isinstance(loaded.get_submodule("features.2.0.0"), EventConv2d)
    assert isinstance(loaded.get_submodule("classifier.0.0"), EventLinear)
    assert not isinstance(loaded.get_submodule("features.0.0.layers.0"), EventConv2d)
    bundle = prepare_export(run)
    with torch.no_grad():
        torch.testing.assert_close(loaded(bundle.example), bundle.model(bundle.example), atol=1e-4, rtol=1e-4)
    _, again, _ = load_deployed(path, remeasure=True)
    assert again.model_ms is not None and again.rewritten_ms is not None  # measured on this machine
    from sparsesnn.core.errors import CheckpointError

    assert main(["export", str(run), "--format", "pt"]) == 0
    with pytest.raises(CheckpointError, match="--format deploy"):
        load_deployed(run / "model.pt")


def test_deploy_keeps_the_model_as_given_when_the_rewrites_are_slower(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    import sparsesnn.deploy.api as deploy_module
    from sparsesnn.deploy.passes import replace_neurons

    def slow_neurons(model: nn.Module, backend: str = "auto") -> list[str]:
        names = replace_neurons(model, backend)  # type: ignore[arg-type]
        for name in names:
            model.get_submodule(name).register_forward_hook(lambda *_: time.sleep(0.02))  # well above load noise
        return names

    monkeypatch.setattr(deploy_module, "replace_neurons", slow_neurons)
    model = sparse_convnet()
    x = DirectEncoder(4)(torch.rand(2, 1, 8, 8))
    deployed, report = deploy(model, x, repeats=3)
    assert report.chosen == "model" and report.rewritten_ms > report.model_ms  # type: ignore[operator]
    assert report.inference_neurons == [] and not any(c.event for c in report.layers.values())
    assert not any(isinstance(m, (EventConv2d, EventLinear)) for m in deployed.modules())
    with torch.no_grad():
        assert torch.equal(deployed(x), model(x))


class _Slow(nn.Module):
    """A layer's stand-in that computes the same and sleeps ``seconds`` per call."""

    def __init__(self, layer: nn.Module, seconds: float) -> None:
        super().__init__()
        self.layer, self.seconds = layer, seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds)
        return self.layer(x)


@pytest.mark.parametrize("slow", ["event", "dense"])
def test_a_layer_choice_is_turned_over_where_the_whole_model_is_faster(slow) -> None:  # type: ignore[no-untyped-def]
    """deploy's whole-model check: the form that makes the whole model slower loses, whatever was chosen alone; the
    other choices stay, and both times are in the report."""
    from sparsesnn.deploy.api import DeployReport, LayerChoice, _choose_in_context

    model = sparse_convnet()
    name = "classifier.0.0"
    dense = model.get_submodule(name)
    event = EventLinear(dense, "torch")
    forms = {name: (_Slow(dense, 0.01), event) if slow == "dense" else (dense, _Slow(event, 0.01))}
    report = DeployReport()
    chosen_alone = slow == "event"  # alone, the layer that turns out slow had won
    report.layers[name] = LayerChoice("Linear", 0.1, 0.1, 1.0, 0.5, chosen_alone)
    x = DirectEncoder(4)(torch.rand(2, 1, 8, 8))
    expected = model(x)
    with torch.no_grad():
        assert _choose_in_context(model, x, forms, report, repeats=2, fuse=False)
    choice = report.layers[name]
    assert choice.event == (slow == "dense")
    assert choice.context_ms[slow] > choice.context_ms["event" if slow == "dense" else "dense"] + 5.0
    assert (model.get_submodule(name) is event) == (slow == "dense")
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_deploy_reports_each_layers_whole_model_times() -> None:
    deployed, report = deploy(sparse_convnet(), DirectEncoder(4)(torch.rand(1, 1, 8, 8)), repeats=2)
    assert report.layers and all(set(c.context_ms) == {"event", "dense"} for c in report.layers.values())
    for name, choice in report.layers.items():
        assert choice.event == (type(deployed.get_submodule(name)) in (EventConv2d, EventLinear))


def test_an_event_layer_that_changes_the_outputs_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sparsesnn.deploy.api as deploy_module
    from sparsesnn.deploy.api import DeployMismatchError

    real = deploy_module._event_form

    class _Off(nn.Module):
        def __init__(self, layer: nn.Module) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x) + 10.0

    monkeypatch.setattr(
        deploy_module, "_event_form", lambda m, *a: _Off(real(m, *a)) if isinstance(m, nn.Linear) else real(m, *a)
    )
    with pytest.raises(DeployMismatchError, match=r"event layers pass \(.*classifier\.0\.layers\.0\) changed"):
        deploy(sparse_convnet(), DirectEncoder(4)(torch.rand(2, 1, 8, 8)), force=True, repeats=1)
