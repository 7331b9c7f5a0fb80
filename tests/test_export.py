"""Model export (issue #10): finalized + compacted model to pt / safetensors / NIR, loaded back to the same outputs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsesnn.cli import main
from sparsesnn.interop.export import (
    ExportBundle,
    export_nir,
    export_pt,
    export_run,
    export_safetensors,
    load_compact_model,
    load_export,
    prepare_export,
)
from sparsesnn.interop.nir_read import load_nir, max_output_difference, nir_to_module
from sparsesnn.interop.nir_write import DEFAULT_DT, NIRUnsupportedError, model_to_nir
from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.neuron.layers import SeqFolded
from sparsesnn.neuron.lif import LIF, PLIF
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import Trainer
from tests.conftest import tiny_toml

MLP_MODEL = 'name = "mlp"\nparams = { hidden = [32] }'
RUNS = {
    # mlp, LIF with input decay; 10 of the 32 hidden neurons are pruned before export
    "mlp": (MLP_MODEL, "", 10),
    # conv with average pools (vgg16 layout, 2 stages), PLIF without input decay; 3 of 8 channels pruned
    "vgg": (
        'name = "vgg16"\nparams = { cfg = [8, "P", 8, "P"], pool = "avg" }',
        'kind = "plif"\ndecay_input = false\n',
        3,
    ),
    # the MNIST convnet layout with max pools on spikes (-> SumPool2d + Threshold); 2 of 4 channels pruned
    "convnet": ('name = "convnet"\nparams = { channels = [4, 8] }', "", 2),
}


def _toml(model: str, neuron: str) -> str:
    """tiny_toml with another model and neuron settings: 2 epochs, T = 4, threshold 0.25 so every layer fires."""
    toml = tiny_toml("static", 0.5, "{}").replace("epochs = 3", "epochs = 2")
    toml = toml.replace("time_steps = 2", "time_steps = 4")
    neuron_section = '[neuron]\nbackend = "eager"\n'
    return toml.replace(MLP_MODEL, model).replace(neuron_section, neuron_section + "v_threshold = 0.25\n" + neuron)


def _train_with_dead_neurons(run_dir: Path, model: str, neuron: str, n_dead: int) -> Path:
    trainer = Trainer(load_config_text(_toml(model, neuron)), run_dir, quiet=True)
    trainer.fit()
    masks = trainer.learner.masks
    assert masks is not None
    layer = masks.layers[0]
    alive = torch.ones_like(layer.neuron_mask)
    alive[1 : 1 + n_dead] = False
    masks.set_neuron_mask(layer, alive)
    trainer.save()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_runs")
    return {name: _train_with_dead_neurons(root / name, *spec) for name, spec in RUNS.items()}


@pytest.fixture(scope="module")
def bundles(runs: dict[str, Path]) -> dict[str, ExportBundle]:
    return {name: prepare_export(rd) for name, rd in runs.items()}


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _spikes_per_neuron_layer(model: nn.Module, x: torch.Tensor) -> list[float]:
    counts: list[float] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: counts.append(float(out.sum())))
        for m in model.modules()
        if isinstance(m, LIF)
    ]
    _out(model, x)
    for h in hooks:
        h.remove()
    return counts


# ----------------------------------------------------------------------------------------------------------------------
# compaction of a run
# ----------------------------------------------------------------------------------------------------------------------
def test_compacted_model_drops_the_pruned_neurons(runs, bundles):
    model, info, report = load_compact_model(runs["mlp"])
    assert info.name == "digits" and not model.training
    assert report.removed == {"features.0.0.0": (32, 22)}
    assert model.features[0][0][0].out_features == 22 and model.classifier[0].in_features == 22
    assert report.params_after == report.params_before - 10 * (64 + 1) - 10 * 10
    assert not any(name.endswith(("weight_mask", "neuron_mask")) for name in model.state_dict())  # masks baked in
    b = bundles["vgg"]
    assert b.report.removed == {"features.0.0.0": (8, 5)}  # conv channels, their BN entries, next conv's fan-in
    assert b.model.features[2][0][0].in_channels == 5
    assert bundles["convnet"].report.removed == {"features.0.0.0": (4, 2)}


# ----------------------------------------------------------------------------------------------------------------------
# pt and safetensors
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["mlp", "vgg"])
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_state_dict_formats_round_trip_exactly(bundles, tmp_path, run, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    b = bundles[run]
    path = tmp_path / f"model.{fmt}"
    (export_pt if fmt == "pt" else export_safetensors)(b.model, path, b.meta())
    loaded, meta = load_export(path)
    assert not loaded.training
    assert meta["compaction"]["removed"] == {k: {"before": u, "after": v} for k, (u, v) in b.report.removed.items()}
    assert meta["input_shape"] == [1, 8, 8] and meta["time_steps"] == 4
    ref = b.model.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert torch.equal(_out(loaded, b.example), _out(b.model, b.example))


def test_pt_export_loads_without_unpickling_code(bundles, tmp_path):
    b = bundles["mlp"]
    export_pt(b.model, tmp_path / "m.pt", b.meta())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # plain containers and tensors only
    assert set(payload) == {"meta", "state_dict"} and payload["meta"]["format"] == "sparsesnn.model"


# ----------------------------------------------------------------------------------------------------------------------
# NIR
# ----------------------------------------------------------------------------------------------------------------------
EXPECTED_NODES = {
    "mlp": {"Input", "Flatten", "Affine", "LIF", "Output"},
    "vgg": {"Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "Output"},
    "convnet": {"Input", "Conv2d", "LIF", "SumPool2d", "Threshold", "Flatten", "Affine", "Output"},
}


@pytest.mark.parametrize("run", ["mlp", "vgg", "convnet"])
def test_nir_file_reads_back_and_resimulates_to_the_same_outputs(bundles, tmp_path, run):
    nir = pytest.importorskip("nir")
    b = bundles[run]
    assert all(c > 0 for c in _spikes_per_neuron_layer(b.model, b.example)), "every neuron layer must fire"
    path = tmp_path / "model.nir"
    diff = export_nir(b.model, path, b.example)
    graph = nir.read(path)
    assert {type(n).__name__ for n in graph.nodes.values()} == EXPECTED_NODES[run]
    assert graph.metadata["producer"] == "sparsesnn"
    sim = load_nir(path, backend="eager")
    ref = _out(b.model, b.example)
    got = _out(sim, b.example)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert diff == pytest.approx(float((got - ref).abs().max()))
    # the compacted widths are what was written
    first = graph.nodes["features_0_0_0"]
    assert first.weight.shape[0] == {"mlp": 22, "vgg": 5, "convnet": 2}[run]


def test_nir_neuron_parameters_follow_the_documented_mapping(bundles):
    pytest.importorskip("nir")
    b = bundles["vgg"]  # PLIF without input decay
    graph = model_to_nir(b.model, b.input_shape)  # default dt = 1e-4 s per time step
    assert graph.metadata["dt"] == DEFAULT_DT == 1e-4
    plif = b.model.features[0][1]
    assert isinstance(plif, PLIF)
    node = graph.nodes["features_0_1"]
    tau_steps = 1.0 / float(torch.sigmoid(plif.w.detach()))
    assert node.tau.shape == (5, 8, 8) and np.all(node.tau == 1e-4 * tau_steps)  # NIR tau in seconds = dt * steps
    assert np.all(node.r == tau_steps)  # decay_input=False: r = tau / dt
    other = model_to_nir(b.model, b.input_shape, dt=1e-3).nodes["features_0_1"]
    assert np.all(other.tau == 1e-3 * tau_steps) and np.all(other.r == tau_steps)
    assert np.all(node.v_leak == 0.0) and np.all(node.v_reset == 0.0) and np.all(node.v_threshold == 0.25)
    conv_nodes = [n for n in graph.nodes.values() if type(n).__name__ == "Conv2d"]
    assert len(conv_nodes) == 2  # BatchNorm folded into the convs, no node of its own
    mlp_graph = model_to_nir(bundles["mlp"].model, bundles["mlp"].input_shape)
    assert np.all(mlp_graph.nodes["features_0_1"].r == 1.0)  # decay_input=True: r = 1


def test_nir_residual_network_round_trips():
    pytest.importorskip("nir")
    torch.manual_seed(0)
    model = build_model(
        "resnet19", in_channels=1, input_size=8, stem_channels=4, widths=(4, 8), blocks=(1, 1), strides=(1, 2),
        hidden=8, neuron=NeuronSpec(tau=2.0, decay_input=False, backend="eager"),
    ).eval()  # fmt: skip
    x = (torch.rand(3, 2, 1, 8, 8) < 0.5).float()
    graph = model_to_nir(model, (1, 8, 8))
    fan_in = {dst: sum(1 for _, d in graph.edges if d == dst) for _, dst in graph.edges}
    assert max(fan_in.values()) == 2  # the residual additions: two edges into the block's neuron
    assert max_output_difference(model, nir_to_module(graph, backend="eager"), x) <= 1e-5


def test_nir_export_refuses_what_it_cannot_map_faithfully():
    pytest.importorskip("nir")
    soft = build_model("mlp", in_channels=1, input_size=4, hidden=[5], neuron=NeuronSpec(v_reset=None))
    with pytest.raises(NIRUnsupportedError, match="soft reset"):
        model_to_nir(soft, (1, 4, 4))
    analog_maxpool = nn.Sequential(SeqFolded(nn.MaxPool2d(2), nn.Flatten()), SeqFolded(nn.Linear(4, 3)))
    with pytest.raises(NIRUnsupportedError, match="binary"):
        model_to_nir(analog_maxpool, (1, 4, 4))

    class MeanReadout(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = SeqFolded(nn.Linear(4, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).mean(0)

    with pytest.raises(NIRUnsupportedError, match="mean"):
        model_to_nir(MeanReadout(), (4,))


def test_nir_loader_general_lif_against_forward_euler():
    """A foreign LIF with r not in {1, tau} and v_reset != 0, checked against NIR's equation by hand."""
    nir = pytest.importorskip("nir")
    n, tau, r, v_reset, v_th = 3, 4.0, 2.5, -0.5, 1.0
    full = lambda v: np.full((n,), v)  # noqa: E731
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([n])}),
            "lif": nir.LIF(tau=full(tau), r=full(r), v_leak=full(v_reset), v_threshold=full(v_th),
                           v_reset=full(v_reset)),
            "output": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("input", "lif"), ("lif", "output")],
    )  # fmt: skip
    x = torch.rand(12, 2, n) * 2
    got = nir_to_module(graph, dt=1.0, backend="eager")(x)  # no metadata: tau is read in units of dt
    v = torch.full((2, n), v_reset)
    expected = []
    for t in range(x.shape[0]):
        v = v + (v_reset - v + r * x[t]) / tau
        s = (v >= v_th).float()
        v = torch.where(s > 0, torch.full_like(v, v_reset), v)
        expected.append(s)
    torch.testing.assert_close(got, torch.stack(expected))
    # without dt or metadata the peers' 1e-4 s applies: tau = 4 s is 40,000 steps
    assert nir_to_module(graph, backend="eager").layers[1][1].tau == pytest.approx(4.0 / DEFAULT_DT)
    with pytest.raises(NIRUnsupportedError, match="unstable"):
        nir_to_module(graph, dt=8.0)  # tau / dt = 0.5
    with pytest.raises(NIRUnsupportedError, match="IF"):
        nir_to_module(nir.NIRGraph.from_list(nir.IF(r=full(1.0), v_threshold=full(1.0))))


# ----------------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------------
def test_cli_export(runs, bundles, tmp_path, capsys):
    pytest.importorskip("safetensors")
    nir = pytest.importorskip("nir")
    rd = runs["mlp"]
    assert main(["export", str(rd), "--format", "safetensors"]) == 0
    out = capsys.readouterr().out
    default = rd / "model.safetensors"
    assert out.splitlines()[0] == str(default) and default.is_file()
    assert "parameters: 2,410 before compaction, 1,660 after" in out
    assert "removed 10 of 32 units of features.0.0.0 (22 left)" in out
    loaded, _ = load_export(default)
    b = bundles["mlp"]
    assert torch.equal(_out(loaded, b.example), _out(b.model, b.example))

    target = tmp_path / "sub" / "net.nir"
    assert main(["export", str(runs["convnet"]), "--format", "nir", "--out", str(target)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(target)
    reported = re.search(r"NIR file re-simulated on 32 test samples: max \|output difference\| (\S+)", out)
    assert reported is not None and float(reported.group(1)) <= 1e-5
    assert "Threshold" in {type(n).__name__ for n in nir.read(target).nodes.values()}
    assert "NIR time step dt = 0.0001 s" in out and nir.read(target).metadata["dt"] == 1e-4

    # --dt: written into every tau and the metadata; our loader reads it back and still reproduces the model
    assert main(["export", str(runs["convnet"]), "--format", "nir", "--out", str(target), "--dt", "0.001"]) == 0
    out = capsys.readouterr().out
    reported = re.search(r"max \|output difference\| (\S+)", out)
    assert "NIR time step dt = 0.001 s" in out and reported is not None and float(reported.group(1)) <= 1e-5
    graph = nir.read(target)
    lif = next(n for n in graph.nodes.values() if type(n).__name__ == "LIF")
    assert graph.metadata["dt"] == 1e-3 and np.all(lif.tau == 1e-3 * 2.0)  # the convnet's tau = 2 steps
    with pytest.warns(UserWarning, match="written with dt = 0.001"):
        misread = load_nir(target, dt=1e-4)  # a reader told another dt gets other time constants: warned
    assert next(m.tau for m in misread.modules() if isinstance(m, LIF)) == pytest.approx(20.0)  # 2e-3 s / 1e-4 s
    assert next(m.tau for m in load_nir(target).modules() if isinstance(m, LIF)) == pytest.approx(2.0)
    # dt applies to NIR only, and must be a time step
    assert main(["export", str(runs["mlp"]), "--format", "pt", "--dt", "0.001"]) == 2
    assert "applies to the NIR format only" in capsys.readouterr().err
    assert main(["export", str(runs["mlp"]), "--format", "deploy", "--dt", "0.001"]) == 2
    assert "the deploy format stores the model's own time constants" in capsys.readouterr().err
    assert main(["export", str(runs["mlp"]), "--format", "nir", "--dt", "0"]) == 2
    assert "finite number > 0" in capsys.readouterr().err


def test_cli_export_reports_unmappable_models(tmp_path, capsys):
    pytest.importorskip("nir")
    rd = tmp_path / "soft"
    Trainer(load_config_text(_toml(MLP_MODEL, "soft_reset = true\n")), rd, quiet=True).fit()
    assert main(["export", str(rd), "--format", "nir"]) == 2
    assert "soft reset" in capsys.readouterr().err
    assert not (rd / "model.nir").exists()
    assert export_run(rd, "pt").path == rd / "model.pt"  # the state-dict formats take any model
    assert math.isfinite(float(_out(load_export(rd / "model.pt")[0], torch.zeros(2, 1, 1, 8, 8)).sum()))
