"""NIR that other tools read (issue 23, item 8): a trained sparse run, exported with ``sparsesnn export --format nir``
and its default ``dt``, imported with snnTorch's and with SpikingJelly's own NIR importers (their defaults, no
argument), gives our spikes on a fixed input over T steps.

Tolerance. The peers' arithmetic differs from ours by at most about one float32 ulp per operation (snnTorch computes
``beta * m`` where we compute ``V - V / tau``, SpikingJelly divides by ``tau`` where we multiply by ``1/tau``, and a
BatchNorm folded into its conv rounds differently), so a membrane landing within an ulp of the threshold may fire
differently. With ``tau = 2`` the neuron arithmetic of both peers is exact, and the MLP run must give identical spikes
and outputs. The conv run (PLIF with a learned tau, BatchNorm folded) may differ in at most 0.1 % of the spike entries
of a layer; measured: 0 (BENCHMARKS.md, "NIR interoperability").

Conventions a peer cannot follow, each documented with the fix a user needs and checked after that fix:

* ``dt``: snnTorch reads every file with ``dt = 1e-4`` s (fixed in its code), SpikingJelly by default. A file written
  with another ``dt`` (such as ``dt = 1``, what sparsesnn wrote before) is misread; fix: export with the default, or
  give SpikingJelly ``dt=graph.metadata["dt"]``.
* reset value: snnTorch asserts ``v_leak = 0`` and always resets to 0; fix for ``neuron.v_reset != 0``:
  :func:`sparsesnn.interop.nir_peers.zero_reset` (shift the membrane by ``-v_reset``; the spikes are the same).
* max pools, written as ``SumPool2d`` + ``Threshold``: neither peer maps ``Threshold``; fix: ``pool = "avg"``.
* the soft reset has no NIR node and is refused at export (tests/test_export.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from sparsesnn.cli import main
from sparsesnn.interop.export import ExportBundle, prepare_export
from sparsesnn.interop.nir_read import load_nir
from sparsesnn.interop.nir_write import DEFAULT_DT, model_to_nir
from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.neuron.lif import LIF
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import Trainer
from tests.conftest import tiny_toml

pytestmark = pytest.mark.peers
nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")
pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly.activation_based.nir_exchange")

from sparsesnn.interop.nir_peers import (  # noqa: E402  (after the skips: it is only usable with the peers)
    PEERS,
    NetworkRun,
    PeerImportError,
    agreement,
    run_ours,
    run_peer,
    run_spikingjelly,
    zero_reset,
)

MLP_MODEL = 'name = "mlp"\nparams = { hidden = [32] }'
RUNS = {
    # two hidden LIF layers, tau = 2, input decay (NIR r = 1): snnTorch scales its threshold by tau
    "mlp": ('name = "mlp"\nparams = { hidden = [32, 16] }', ""),
    # convs + average pools, BatchNorm (folded), PLIF with a learned tau, no input decay (NIR r = tau / dt)
    "vgg": (
        'name = "vgg16"\nparams = { cfg = [8, "P", 8, "P"], pool = "avg" }',
        'kind = "plif"\ndecay_input = false\n',
    ),
}
#: largest fraction of a layer's spike entries that may differ from ours, per run (see the module docstring)
TOLERANCE = {"mlp": 0.0, "vgg": 1e-3}


def _toml(model: str, neuron: str) -> str:
    """A tiny RigL run (density 0.3, 3 epochs of 6 steps), T = 8, threshold 0.5 so that every layer fires."""
    toml = tiny_toml("rigl", 0.3, "{ update_every = 2 }").replace("time_steps = 2", "time_steps = 8")
    section = '[neuron]\nbackend = "eager"\n'
    return toml.replace(MLP_MODEL, model).replace(section, section + "v_threshold = 0.5\n" + neuron)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ExportBundle, object]]:
    """Each run trained, exported through the command line with the default dt, and its NIR file read back."""
    out = {}
    for name, (model, neuron) in RUNS.items():
        rd = tmp_path_factory.mktemp(name)
        Trainer(load_config_text(_toml(model, neuron)), rd, quiet=True).fit()
        assert main(["export", str(rd), "--format", "nir"]) == 0
        out[name] = (prepare_export(rd), nir.read(rd / "model.nir"))
    return out


def _fires(run: NetworkRun) -> None:
    for layer, s in run.spikes.items():
        rate = float(s.mean())
        assert 0.0 < rate < 1.0, f"layer {layer} fires at rate {rate}: the comparison would be vacuous"


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("peer", PEERS)
def test_peer_imports_our_default_export_and_computes_our_spikes(exported, run, peer):
    bundle, graph = exported[run]
    assert graph.metadata["dt"] == DEFAULT_DT == 1e-4
    ours = run_ours(bundle.model, graph, bundle.example)  # the model itself, not our NIR loader
    _fires(ours)
    theirs = run_peer(peer, graph, bundle.example)
    result = agreement(ours, theirs)
    assert set(result.layers) == set(ours.spikes) and len(result.layers) == 2
    for layer, a in result.layers.items():
        assert a.mismatches <= TOLERANCE[run] * a.total, f"{peer}, {run}, {layer}: {a.mismatches} of {a.total} differ"
    if run == "mlp":  # exact arithmetic (tau = 2): identical spikes, hence identical readout
        assert result.mismatches == 0 and result.output_max_diff <= 1e-6
    if peer == "snntorch" and run == "mlp":  # r = 1: it scales the threshold by tau instead of the input
        assert "scaling weights to avoid scaling inputs" in theirs.log


def test_a_graph_written_with_another_dt_is_misread_unless_the_reader_is_told(exported):
    """dt = 1 is what sparsesnn wrote before: tau = 2 s, which the peers read as 20,000 steps of 1e-4 s."""
    bundle, _ = exported["mlp"]
    graph = model_to_nir(bundle.model, bundle.input_shape, dt=1.0)
    ours = run_ours(bundle.model, graph, bundle.example)
    for peer in PEERS:
        wrong = agreement(ours, run_peer(peer, graph, bundle.example))
        spikes = sum(a.ours for a in wrong.layers.values())
        assert wrong.mismatches > 0.1 * spikes, f"{peer} read a dt = 1 graph with its default dt and still agreed"
    # snnTorch has no dt argument; SpikingJelly does: the dt the file stores restores the agreement
    told = agreement(ours, run_spikingjelly(graph, bundle.example, dt=float(graph.metadata["dt"])))
    assert told.mismatches == 0
    assert torch.equal(load_nir(graph, backend="eager")(bundle.example), ours.output)  # ours reads the metadata


def test_snntorch_resets_to_zero_and_the_documented_shift_fixes_it(exported):
    bundle, _ = exported["mlp"]
    model = copy.deepcopy(bundle.model)
    for m in model.modules():
        if isinstance(m, LIF):
            m.v_reset = -0.25  # a model trained with neuron.v_reset = -0.25
    graph = model_to_nir(model, bundle.input_shape)
    ours = run_ours(model, graph, bundle.example)
    _fires(ours)
    assert agreement(ours, run_peer("spikingjelly", graph, bundle.example)).mismatches == 0  # reads v_reset as is
    with pytest.raises(PeerImportError, match="v_leak not supported"):
        run_peer("snntorch", graph, bundle.example)
    shifted = agreement(ours, run_peer("snntorch", zero_reset(graph), bundle.example))
    for layer, a in shifted.layers.items():  # the shift rounds differently: the conv run's tolerance
        assert a.mismatches <= TOLERANCE["vgg"] * a.total, f"{layer}: {a.mismatches} of {a.total} differ"


def test_max_pool_graphs_are_read_by_neither_peer():
    """A max pool on spikes is written as SumPool2d + Threshold; neither importer maps Threshold (use avg pools)."""
    model = build_model(
        "convnet", in_channels=1, input_size=8, channels=(2, 4), neuron=NeuronSpec(backend="eager")
    ).eval()
    graph = model_to_nir(model, (1, 8, 8))
    assert "Threshold" in {type(n).__name__ for n in graph.nodes.values()}
    x = torch.zeros(2, 1, 1, 8, 8)
    for peer in PEERS:
        with pytest.raises(PeerImportError, match="Threshold"):
            run_peer(peer, graph, x)


def test_missing_neuron_metadata_is_named(exported):
    bundle, graph = exported["mlp"]
    foreign = copy.deepcopy(graph)
    for node in foreign.nodes.values():
        node.metadata = {}
    with pytest.raises(PeerImportError, match="sparsesnn_module"):
        run_ours(bundle.model, foreign, bundle.example)
