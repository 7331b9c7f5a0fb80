"""Run an exported NIR graph in snnTorch and SpikingJelly, through their own NIR importers, and compare their spikes
with the model's.

This is how another tool's user would read a file written by ``sparsesnn export --format nir``; the tests and
``bench/nir_interop.py`` use it to measure the agreement. The conventions each importer applies (``dt``, reset,
input scaling, spike condition) and the mapping from our neurons are in :mod:`sparsesnn.interop.nir_write`. Both
importers need ``nir`` and ``nirtorch`` (``nirtorch>=2.6,<2.7``: the dev extra); snnTorch 1.0.0 and SpikingJelly 2.0
are the versions checked.

* **snnTorch**: ``snntorch.import_nir.import_from_nir(graph)`` returns a ``torch.fx.GraphModule`` whose neurons are
  ``snn.Leaky(init_hidden=True)``: they keep their membrane inside the module, so the network is called once per
  time step, ``out, state = net(x[t], state)``, after ``snntorch.utils.reset(net)`` for every new input sequence.
  Its time step is fixed at ``dt = 1e-4`` s in its code.
* **SpikingJelly**: ``spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=1e-4, step_mode="m")``
  returns a ``GraphModule`` that takes the whole time-major sequence ``[T, B, ...]`` and returns ``(out, state)``;
  ``state=None`` starts every neuron from its reset value.

Spikes are recorded with forward hooks on the peers' neuron modules, keyed by the NIR node name (nirtorch names a
module after its node, ``.`` replaced by ``_``; our exporter writes no dots).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from sparsesnn.core.errors import SparseSNNError
from sparsesnn.interop.nir_write import require_nir

#: the peers whose NIR importers are checked, by package name
PEERS: tuple[str, ...] = ("snntorch", "spikingjelly")


@dataclass
class NetworkRun:
    """One simulation of a network on a time-major input: its output and each neuron layer's spikes."""

    name: str
    output: torch.Tensor  # [T, B, ...]
    spikes: dict[str, torch.Tensor]  # NIR node name of the neuron layer -> spikes [T, B, ...]
    log: str = ""  # what the importer printed


class LayerAgreement(NamedTuple):
    """One neuron layer: spike entries (time step x sample x neuron) equal to ours, all entries, spikes each side."""

    equal: int
    total: int
    ours: int
    theirs: int

    @property
    def mismatches(self) -> int:
        return self.total - self.equal


@dataclass
class Agreement:
    """How far a peer's simulation agrees with ours."""

    peer: str
    layers: dict[str, LayerAgreement] = field(default_factory=dict)  # NIR node of the neuron layer -> its counts
    output_max_diff: float = 0.0

    @property
    def mismatches(self) -> int:
        """Spike entries (time x sample x neuron) that differ, over all neuron layers."""
        return sum(a.mismatches for a in self.layers.values())

    @property
    def fraction(self) -> float:
        """Fraction of spike entries, over all neuron layers, equal to ours (1.0 for identical spike trains)."""
        total = sum(a.total for a in self.layers.values())
        return sum(a.equal for a in self.layers.values()) / total if total else 1.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers: overall and per-layer agreement, mismatches, spike counts, output difference."""
        return {
            "peer": self.peer,
            "spike_agreement": self.fraction,
            "mismatches": self.mismatches,
            "layers": {
                k: {**a._asdict(), "agreement": a.equal / a.total if a.total else 1.0} for k, a in self.layers.items()
            },
            "output_max_abs_diff": self.output_max_diff,
        }


class PeerImportError(SparseSNNError, RuntimeError):
    """A peer is missing, or its NIR importer refused the graph; the message names the peer and its error."""


def _import(module: str, peer: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise PeerImportError(
            f"{peer}'s NIR importer needs {exc.name or module}: pip install 'sparsesnn[dev]' (nirtorch>=2.6,<2.7, "
            f"snntorch==1.0.0; spikingjelly==2.0.0 with --no-deps)"
        ) from exc


def _neuron_layers(graph: Any) -> list[str]:
    nir = require_nir()
    return [name for name, node in graph.nodes.items() if isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF))]


def _record(modules: dict[str, nn.Module], pick: Callable[[Any], torch.Tensor]) -> tuple[dict[str, list], list]:
    records: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []
    for name, m in modules.items():

        def hook(_m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
            records[name].append(pick(out).detach().clone())

        handles.append(m.register_forward_hook(hook))
    return records, handles


@torch.no_grad()
def run_ours(model: nn.Module, graph: Any, x: torch.Tensor) -> NetworkRun:
    """``model`` (the one ``graph`` was exported from) on time-major ``x``, with the spikes of each neuron layer,
    keyed by its NIR node (found through the ``sparsesnn_module`` metadata our exporter writes)."""
    modules = {}
    for name in _neuron_layers(graph):
        source = graph.nodes[name].metadata.get("sparsesnn_module")
        if source is None:
            raise PeerImportError(f"NIR node {name!r} has no 'sparsesnn_module' metadata: not exported by sparsesnn")
        modules[name] = model.get_submodule(str(source))
    records, handles = _record(modules, lambda out: out)
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return NetworkRun("sparsesnn", out, {k: v[0] for k, v in records.items()})


@torch.no_grad()
def run_snntorch(graph: Any, x: torch.Tensor) -> NetworkRun:
    """Import ``graph`` with ``snntorch.import_nir.import_from_nir`` and run it one time step at a time on ``x``
    (``[T, B, ...]``), as snnTorch's stateful neurons need."""
    _import("nirtorch", "snnTorch")
    snn = _import("snntorch", "snnTorch")
    import_nir = _import("snntorch.import_nir", "snnTorch")
    utils = _import("snntorch.utils", "snnTorch")
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # it prints its progress and "[warning] scaling weights ..."
            net = import_nir.import_from_nir(copy.deepcopy(graph))  # it rewrites the graph's edges in place
    except Exception as exc:  # the importer raises AssertionError, ValueError, ... for what it cannot map
        raise PeerImportError(f"snnTorch's import_from_nir refused the graph: {type(exc).__name__}: {exc}") from exc
    net.eval()
    layers = set(_neuron_layers(graph))
    modules = {n: m for n, m in net.named_modules() if n in layers and isinstance(m, snn.Leaky)}
    if set(modules) != layers:
        raise PeerImportError(f"snnTorch mapped neuron layers {sorted(modules)}, the graph has {sorted(layers)}")
    records, handles = _record(modules, lambda out: out[0] if isinstance(out, tuple) else out)
    outputs = []
    try:
        utils.reset(net)  # zero membranes: a new input sequence
        state = None
        for t in range(x.shape[0]):
            out, state = net(x[t], state)
            outputs.append(out)
    finally:
        for h in handles:
            h.remove()
    return NetworkRun("snntorch", torch.stack(outputs), {k: torch.stack(v) for k, v in records.items()}, log.getvalue())


@torch.no_grad()
def run_spikingjelly(graph: Any, x: torch.Tensor, dt: float | None = None) -> NetworkRun:
    """Import ``graph`` with SpikingJelly's ``import_from_nir`` (with its default ``dt`` unless ``dt`` is given) in
    multi-step mode and run it on the whole time-major ``x``."""
    _import("nirtorch", "SpikingJelly")
    exchange = _import("spikingjelly.activation_based.nir_exchange", "SpikingJelly")
    kwargs = {} if dt is None else {"dt": dt}
    try:
        gm = exchange.import_from_nir(graph, step_mode="m", **kwargs)
    except Exception as exc:  # ValueError / NotImplementedError for what it cannot map
        raise PeerImportError(f"SpikingJelly's import_from_nir refused the graph: {type(exc).__name__}: {exc}") from exc
    gm.eval()
    layers = set(_neuron_layers(graph))
    modules = {n: m for n, m in gm.named_modules() if n in layers}
    if set(modules) != layers:
        raise PeerImportError(f"SpikingJelly mapped neuron layers {sorted(modules)}, the graph has {sorted(layers)}")
    # its neurons are wrapped in a module returning (spikes, state); the wrapped neuron's own forward is not called
    records, handles = _record(modules, lambda out: out[0] if isinstance(out, tuple) else out)
    try:
        out, _state = gm(x, None)
    finally:
        for h in handles:
            h.remove()
    return NetworkRun("spikingjelly", out, {k: v[0] for k, v in records.items()})


def run_peer(peer: str, graph: Any, x: torch.Tensor) -> NetworkRun:
    """:func:`run_snntorch` or :func:`run_spikingjelly` (with its default ``dt``) by package name."""
    if peer == "snntorch":
        return run_snntorch(graph, x)
    if peer == "spikingjelly":
        return run_spikingjelly(graph, x)
    raise ValueError(f"peer must be one of {PEERS}, got {peer!r}")


def zero_reset(graph: Any) -> Any:
    """A copy of ``graph`` whose LIF membranes are shifted by ``-v_reset``: ``v_reset = v_leak = 0`` and
    ``v_threshold - v_reset`` as the threshold. The spikes are the same (``V - v_reset`` obeys the same equation
    with the reset value 0); the membranes differ by that constant.

    This is the fix for snnTorch 1.0.0, whose importer asserts ``v_leak = 0`` ("v_leak not supported") and resets
    to 0 whatever ``v_reset`` says, for a model trained with ``neuron.v_reset`` other than 0.
    """
    nir = require_nir()
    out = copy.deepcopy(graph)
    for node in out.nodes.values():
        if isinstance(node, nir.LIF):
            shift = node.v_reset.copy()
            node.v_threshold = node.v_threshold - shift
            node.v_leak = node.v_leak - shift
            node.v_reset = node.v_reset - shift
    return out


def agreement(ours: NetworkRun, theirs: NetworkRun) -> Agreement:
    """Per neuron layer, how many spike entries of ``theirs`` equal ours; the largest output difference."""
    result = Agreement(theirs.name)
    for name, ref in ours.spikes.items():
        got = theirs.spikes[name]
        if got.shape != ref.shape:
            raise PeerImportError(
                f"{theirs.name}: layer {name!r} gave spikes of shape {tuple(got.shape)}, ours {tuple(ref.shape)}"
            )
        result.layers[name] = LayerAgreement(int((got == ref).sum()), ref.numel(), int(ref.sum()), int(got.sum()))
    if theirs.output.shape != ours.output.shape:
        raise PeerImportError(
            f"{theirs.name}: output of shape {tuple(theirs.output.shape)}, ours {tuple(ours.output.shape)}"
        )
    result.output_max_diff = float((theirs.output - ours.output).abs().max()) if ours.output.numel() else 0.0
    return result
