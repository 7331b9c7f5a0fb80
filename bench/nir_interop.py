"""Do other tools compute our spikes from our NIR files? Spike agreement of snnTorch's and SpikingJelly's own NIR
importers with the trained, compacted model, per neuron layer.

Reproduce (from the repository root, inside the project's virtualenv with the dev extra)::

    python bench/nir_interop.py                          # trains the three default runs (digits, ~2 min on 2 cores)
    python bench/nir_interop.py --epochs 3               # shorter training
    python bench/nir_interop.py --run-dir runs/my_run    # an existing run instead (repeatable)
    python bench/nir_interop.py --json nir.json          # the same, and write the JSON to a file too

Runs (trained unless ``--run-dir`` is given; ``configs/digits_quickstart.toml``, scikit-learn's 8x8 digits, which
ship inside sparsesnn, with ``--set`` overrides; ``--epochs`` epochs, default 10):

- ``mlp-rigl``: the quickstart as it is: MLP 64-256-10, RigL at 20 % density, LIF ``tau = 2`` with input decay
  (NIR ``r = 1``), T = 4;
- ``vgg-plif``: ``model.params = { cfg = [16, "P", 32, "P"], pool = "avg" }`` (convs, BatchNorm folded at export,
  average pools), PLIF (learned tau) without input decay (NIR ``r = tau / dt``), RigL at 20 %;
- ``mlp-vreset``: the quickstart with ``neuron.v_reset = -0.25``, which snnTorch's importer cannot read as written.

What is measured, per run: the model is finalized and compacted as ``sparsesnn export`` does
(:func:`sparsesnn.interop.export.prepare_export` on ``--samples`` test samples, encoded time-major as in
evaluation); the graph is built with :func:`sparsesnn.interop.nir_write.model_to_nir`, written with ``nir.write``
and read back with ``nir.read``. Each peer imports it with its own importer and its defaults (snnTorch 1.0.0
``snntorch.import_nir.import_from_nir``; SpikingJelly 2.0 ``nir_exchange.import_from_nir``, ``dt`` not given) and
simulates the test samples (:mod:`sparsesnn.interop.nir_peers`). Reported: the fraction of spike entries (time step x
sample x neuron) equal to the model's, over all neuron layers and per layer, the mismatching entries, the spike
counts of both sides per layer (an agreement near 1 means little when few neurons fire), the largest
absolute difference of the output (the last Affine's, every step), and our firing rate per layer. Graphs:

- ``default``: ``dt = 1e-4`` s, the export default;
- ``dt=1``: what sparsesnn wrote before the ``dt`` option (``tau`` in steps), read by each peer with its default;
  for SpikingJelly also with ``dt=graph.metadata["dt"]`` (``told dt``);
- ``zero_reset``: for a run with ``v_reset != 0``, :func:`sparsesnn.interop.nir_peers.zero_reset` (the membrane
  shifted by ``-v_reset``), the documented fix for snnTorch.

A peer that refuses a graph is reported with its error message. Output: a JSON object on stdout (and in
``--json PATH``), then a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchutil import emit, loadavg, machine, version

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "digits_quickstart.toml"
#: name -> ``--set`` overrides of the quickstart config
DEFAULT_RUNS: dict[str, list[str]] = {
    "mlp-rigl": [],
    "vgg-plif": [
        'model.name="vgg16"',
        'model.params={ cfg = [16, "P", 32, "P"], pool = "avg" }',
        'neuron.kind="plif"',
        "neuron.decay_input=false",
    ],
    "mlp-vreset": ["neuron.v_reset=-0.25"],
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, action="append", help="an existing trained run (repeatable)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each default run (default 10)")
    p.add_argument("--samples", type=int, default=256, help="test samples simulated (default 256)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def train_default_runs(root: Path, epochs: int) -> dict[str, Path]:
    """Train the default runs into ``root``; returns name -> run directory."""
    from sparsesnn.train.config import load_config
    from sparsesnn.train.trainer import Trainer

    runs = {}
    for name, overrides in DEFAULT_RUNS.items():
        rd = root / name
        config = load_config(QUICKSTART, [*overrides, f"run.epochs={epochs}", f'run.name="{name}"'])
        Trainer(config, rd, quiet=True).fit()
        runs[name] = rd
    return runs


def _written(graph: Any) -> Any:
    """``graph`` through ``nir.write`` and ``nir.read``, as a peer gets it from a file."""
    import nir

    buf = io.BytesIO()
    nir.write(buf, graph)
    buf.seek(0)
    return nir.read(buf)


def _row(run: str, graph_name: str, reader: str, ours: Any, simulate: Any) -> dict[str, Any]:
    from sparsesnn.interop.nir_peers import PeerImportError, agreement

    row: dict[str, Any] = {"run": run, "graph": graph_name, "reader": reader}
    try:
        row |= agreement(ours, simulate()).as_dict()
    except PeerImportError as exc:
        row["error"] = str(exc)
    return row


def measure(run: str, run_dir: Path, samples: int) -> dict[str, Any]:
    """Every row of one run (see the module docstring)."""
    from sparsesnn.interop.export import prepare_export
    from sparsesnn.interop.nir_peers import PEERS, run_ours, run_peer, run_spikingjelly, zero_reset
    from sparsesnn.interop.nir_write import DEFAULT_DT, model_to_nir
    from sparsesnn.neuron.lif import LIF

    bundle = prepare_export(run_dir, samples=samples)
    model, x = bundle.model, bundle.example
    graph = _written(model_to_nir(model, bundle.input_shape))
    ours = run_ours(model, graph, x)
    resets = {float(m.v_reset) for m in model.modules() if isinstance(m, LIF) and m.v_reset is not None}
    rows = [_row(run, "default", peer, ours, lambda p=peer: run_peer(p, graph, x)) for peer in PEERS]
    old = _written(model_to_nir(model, bundle.input_shape, dt=1.0))
    rows += [_row(run, "dt=1", peer, ours, lambda p=peer: run_peer(p, old, x)) for peer in PEERS]
    rows.append(_row(run, "dt=1", "spikingjelly (told dt)", ours, lambda: run_spikingjelly(old, x, dt=1.0)))
    if resets != {0.0}:
        shifted = zero_reset(graph)
        rows += [_row(run, "zero_reset", peer, ours, lambda p=peer: run_peer(p, shifted, x)) for peer in PEERS]
    return {
        "run": run,
        "run_dir": str(run_dir),
        "input_shape": [int(s) for s in x.shape],  # [T, B, ...]: the test samples simulated
        "dt_default": DEFAULT_DT,
        "nodes": sorted({type(n).__name__ for n in graph.nodes.values()}),
        "firing_rate": {k: float(v.mean()) for k, v in ours.spikes.items()},
        "v_reset": sorted(resets),
        "rows": rows,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = loadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nir_interop_") as tmp:
        if args.run_dir:
            runs = {Path(rd).name: Path(rd) for rd in args.run_dir}
        else:
            runs = train_default_runs(Path(tmp), args.epochs)
        trained_s = time.perf_counter() - started
        results = [measure(name, rd, args.samples) for name, rd in runs.items()]
    return {
        "benchmark": "nir_interop",
        "epochs": None if args.run_dir else args.epochs,
        "samples": args.samples,
        "results": results,
        "train_s": trained_s,
        "total_s": time.perf_counter() - started,
        "versions": {d: version(d) for d in ("torch", "nir", "nirtorch", "snntorch", "spikingjelly")},
        "machine": machine(load_start, False),
    }


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| run | graph | reader | spike agreement | mismatching / entries | per layer (spikes ours / theirs) "
        "| output max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in result["results"]:
        for row in res["rows"]:
            head = f"| {row['run']} | {row['graph']} | {row['reader']} |"
            if "error" in row:
                lines.append(f"{head} refused: {_short(row['error'])} | | | |")
                continue
            total = sum(v["total"] for v in row["layers"].values())
            layers = ", ".join(
                f"{k} {v['agreement']:.4f} ({v['ours']:,} / {v['theirs']:,})" for k, v in row["layers"].items()
            )
            lines.append(
                f"{head} {row['spike_agreement']:.6f} | {row['mismatches']:,} / {total:,} | {layers} | "
                f"{row['output_max_abs_diff']:.3g} |"
            )
    lines.append("")
    for res in result["results"]:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in res["firing_rate"].items())
        lines.append(
            f"- {res['run']}: input [T, B, ...] = {res['input_shape']}, nodes {', '.join(res['nodes'])}; "
            f"our firing rates: {rates}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            result = run(args)
    finally:
        torch.set_num_threads(previous)
    emit(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
