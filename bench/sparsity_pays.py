"""Does sparsity pay? Accuracy against deployed latency and SOPs, sparse beside dense and narrower dense (issue 33).

Every MNIST row trains the convnet of ``configs/mnist_dense.toml`` (conv 1->32, conv 32->64, FC 3136->512, FC 512->10,
T = 4) for the same epochs (5) with the same seed (0); only the width or the ``[sparse]`` section differs:

- ``dense``, and the same network made narrower: ``dense_half`` (channels 16, 32, hidden 256) and ``dense_quarter``
  (8, 16, 128): the baseline sparsity has to beat to be worth anything;
- ESL and the PQ index at 10 %, each with the parameter budget (the papers') and the MAC budget
  (``sparse.budget = "macs"``); RigL at 10 % with the MAC budget; ESL with the MAC budget and ERK, by single weights
  and in blocks of 8 output channels (``sparse.granularity = "block"``), the block row also at 20 % of the MACs;
  EvoKD with the block row's settings, learning from the ``dense`` row (train it first); SD-SNN
  (``configs/sdsnn_mnist.toml`` with ``N = 1``: its development needs ``2N + 3`` epochs).

``--dataset nmnist`` has three rows on the N-MNIST convnet (``configs/nmnist_convnet.toml``, 12 epochs): dense,
half as wide, ESL at 10 % of the MACs in blocks.

``train`` runs the rows one after another, each in its own ``sparsesnn train`` process, into
``bench/out/sparsity_pays/DATASET/ROW``; a finished run is reused and an interrupted one resumed (``--resume``), so
the bench can be built up over several sessions. ``measure`` deploys every finished run
(:func:`sparsesnn.deploy.deploy`), checks its predictions against the trained model on the whole test split, and
times the rows and the dense row in eager PyTorch round robin at batch 1 and 64, one and two threads; it writes JSON,
a Markdown table and a PNG plot of accuracy against latency and SOPs.

    PYTHONPATH=. python bench/sparsity_pays.py train [--dataset mnist] [--rows dense,esl10_macs] [--epochs 5]
    PYTHONPATH=. python bench/sparsity_pays.py measure [--dataset mnist] --json bench/out/sparsity_pays.json \\
        --png bench/out/sparsity_pays.png [--unfused]

``--unfused`` also times every deployed model whose blocks deploy fused (``report.fused``) with them unfused, in the
same round robin (a cell's ``fusion_speedup``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import emit, loadavg, machine, round_robin_per_sample, summary

from sparsesnn.train.rundir import CHECKPOINT_FILE, read_metrics, read_summary

REPO = Path(__file__).resolve().parents[1]
OUT_ROOT = REPO / "bench" / "out" / "sparsity_pays"

ESL10 = ['sparse.method="esl"', "sparse.density=0.1"]
PQI10 = ["sparse.density=0.1"]
MACS = ['sparse.budget="macs"']
ERK = ['sparse.distribution="erk"']
BLOCKS = ['sparse.granularity="block"']

#: row -> (recipe, --set overrides); every row also gets run.epochs and run.seed
ROWS: dict[str, tuple[str, list[str]]] = {
    "dense": ("configs/mnist_dense.toml", []),
    "esl10_macs": ("configs/mnist_dense.toml", ESL10 + MACS),
    "dense_half": ("configs/mnist_dense.toml", ["model.params.channels=[16, 32]", "model.params.hidden=256"]),
    "dense_quarter": ("configs/mnist_dense.toml", ["model.params.channels=[8, 16]", "model.params.hidden=128"]),
    "esl10_params": ("configs/mnist_dense.toml", ESL10),
    "rigl10_macs": ("configs/mnist_dense.toml", ['sparse.method="rigl"', "sparse.density=0.1", *MACS]),
    "pqi10_macs": ("configs/pqi_mnist.toml", PQI10 + MACS),
    # ERK on MACs: ER on MACs leaves the FC 3136 -> 512 at 0.7 % (esl10_macs), ERK at 5 %
    "esl10_macs_block": ("configs/mnist_dense.toml", ESL10 + MACS + ERK + BLOCKS),
    "esl10_macs_erk": ("configs/mnist_dense.toml", ESL10 + MACS + ERK),
    # the block row at twice its MAC budget: what the twin's accuracy target (within 0.3 pt) costs in speed; at 10 %
    # the hidden conv, 69 % of the masked layers' dense MACs, can keep at most 14 % of its weights
    "esl20_macs_block": (
        "configs/mnist_dense.toml",
        ['sparse.method="esl"', "sparse.density=0.2", *MACS, *ERK, *BLOCKS],
    ),
    "pqi10_params": ("configs/pqi_mnist.toml", PQI10),
    # EvoKD: the block row's rewiring while learning from the dense row (its teacher, trained first) by reverse KL
    "evokd10_macs_block": (
        "configs/mnist_dense.toml",
        [
            'sparse.method="evokd"',
            "sparse.density=0.1",
            *MACS,
            *ERK,
            *BLOCKS,
            'distill.source="run"',
            'distill.teacher_run="{out}/dense"',
        ],
    ),
    # N = 1: neuron pruning and regeneration first run at the end of epoch 2N + 2 = 4, so that 5 epochs develop
    "sdsnn": ("configs/sdsnn_mnist.toml", ["sparse.params.N=1"]),
}


#: the N-MNIST convnet (configs/nmnist_convnet.toml: conv 2->32, conv 32->64, FC 4096->10, T = 8 event frames), 12
#: epochs: dense, half as wide, and ESL at 10 % of the MACs in blocks (the hidden conv is its only masked layer)
NMNIST_ROWS: dict[str, tuple[str, list[str]]] = {
    "dense": ("configs/nmnist_convnet.toml", []),
    "esl10_macs_block": ("configs/nmnist_convnet.toml", ESL10 + MACS + ERK + BLOCKS),
    "dense_half": ("configs/nmnist_convnet.toml", ["model.params.channels=[16, 32]"]),
}
#: dataset -> (rows, epochs of every row)
DATASETS: dict[str, tuple[dict[str, tuple[str, list[str]]], int]] = {"mnist": (ROWS, 5), "nmnist": (NMNIST_ROWS, 12)}


def train_row(
    name: str, out: Path, epochs: int, seed: int, rows: dict[str, tuple[str, list[str]]] = ROWS
) -> float | None:
    """Train (or resume) row ``name`` into ``out / name``; returns the wall time, None when it was already done."""
    recipe, overrides = rows[name]
    overrides = [s.replace("{out}", str(out.resolve())) for s in overrides]  # a teacher row beside this one
    run_dir = out / name
    if read_summary(run_dir) is not None:
        return None
    if (run_dir / CHECKPOINT_FILE).exists():
        cmd = [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--resume", str(run_dir)]
    else:
        cmd = [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--config", str(REPO / recipe)]
        cmd += ["--run-dir", str(run_dir), "--overwrite"]
        for s in [*overrides, f"run.epochs={epochs}", f"run.seed={seed}", f'run.name="{name}"']:
            cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.perf_counter() - t0


#: the rows a sparse row is compared with: the dense-trained network deployed the same way, and the narrower dense
DENSE_FAMILY = ("dense", "dense_half", "dense_quarter")
#: (threads, batch) cells timed
CELLS = [(1, 1), (1, 64), (2, 1), (2, 64)]


@torch.no_grad()
def load_row(name: str, run_dir: Path) -> dict[str, Any]:
    """A finished row: its finalized and compacted models, test split, accuracy, SOPs and densities."""
    from sparsesnn.interop.export import prepare_export
    from sparsesnn.metrics import SynapticOpsMonitor, connections

    bundle = prepare_export(run_dir, device="cpu")
    assert bundle.test_batches is not None and bundle.finalized is not None
    test = list(bundle.test_batches(500))
    predictions = torch.cat([bundle.finalized(x).mean(0).argmax(-1) for x, _ in test])
    targets = torch.cat([y for _, y in test])
    monitor = SynapticOpsMonitor(bundle.model)
    with monitor.active():
        for x, _ in test[:4]:
            bundle.model(x)
    ops = monitor.result(sum(int(x.shape[1]) for x, _ in test[:4]))
    last = read_metrics(run_dir)[-1]
    return {
        "name": name,
        "bundle": bundle,
        "test": test,
        "predictions": predictions,
        "result": {
            "name": name,
            "run": str(run_dir),
            "test_samples": int(targets.numel()),
            "test_acc": float((predictions == targets).float().mean()),
            "weight_density": connections(bundle.finalized)["density"],
            "masked_density": last.get("density"),
            "mac_density": last.get("mac_density"),
            "parameters": sum(p.numel() for p in bundle.model.parameters()),
            "sops_per_sample": ops["Effective_ACs"],
            "analog_macs_per_sample": ops["Effective_MACs"],
            "energy_uJ": ops["energy_uJ"],
            "cells": [],
        },
    }


@torch.no_grad()
def measure_cell(
    rows: list[dict[str, Any]], threads: int, batch: int, rounds: int, samples: int, unfused: bool = False
) -> None:
    """Deploy every row for ``batch`` on ``threads`` threads, check its predictions on the whole test split, and time
    all of them (and the dense row in eager PyTorch) round robin; appends a cell to each row's result. ``unfused``:
    each deployed model with fused blocks (``report.fused``) is also timed in the same round robin with its blocks
    unfused (:func:`~sparsesnn.deploy.block_fusion.unfuse`), after checking that both give the same outputs."""
    from sparsesnn.deploy.api import deploy
    from sparsesnn.deploy.block_fusion import unfuse

    torch.set_num_threads(threads)
    first = next(r for r in rows if r["name"] == "dense") if any(r["name"] == "dense" for r in rows) else rows[0]
    head = first["test"][0][0]
    inputs = [head[:, i : i + 1] for i in range(samples)] if batch == 1 else [head[:, :batch]]
    models: dict[str, nn.Module] = {}
    reports = {}
    for row in rows:
        deployed, report = deploy(row["bundle"].model, inputs[0])
        got = torch.cat([deployed(x).mean(0).argmax(-1) for x, _ in row["test"]])
        reports[row["name"]] = (report, int((got == row["predictions"]).sum()))
        models[row["name"]] = deployed
        if unfused and report.fused:
            plain = copy.deepcopy(deployed)
            unfuse(plain)
            x = row["test"][0][0]
            if not torch.equal(plain(x), deployed(x)):
                raise AssertionError(f"{row['name']}: the fused blocks' outputs differ from the unfused ones")
            models[f"{row['name']} (unfused)"] = plain
    models["dense (eager)"] = first["bundle"].finalized
    ms = round_robin_per_sample(models, inputs, rounds)
    med = {k: statistics.median(v) for k, v in ms.items()}
    for row in rows:
        report, identical = reports[row["name"]]
        name = row["name"]
        row["result"]["cells"].append(
            {
                "threads": threads,
                "batch": batch,
                "ms_per_sample": summary(ms[name]),
                "dense_eager_ms_per_sample": summary(ms["dense (eager)"]),
                "vs_dense_eager": med["dense (eager)"] / med[name],
                "vs": {other: med[other] / med[name] for other in DENSE_FAMILY if other in med},
                "identical_predictions": identical,
                "chosen": report.chosen,
                "fused": list(report.fused),
                "layers": {
                    k: {"event": c.event, "layout": c.layout, "context_ms": c.context_ms}
                    for k, c in report.layers.items()
                },
            }
        )
        plain_name = f"{name} (unfused)"
        if plain_name in ms:
            row["result"]["cells"][-1]["unfused_ms_per_sample"] = summary(ms[plain_name])
            row["result"]["cells"][-1]["fusion_speedup"] = med[plain_name] / med[name]
    print(f"[{threads} thread(s), batch {batch}] " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()), file=sys.stderr)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Accuracy against deployed time per sample (speed-up against the dense row deployed the same way)",
        "",
        "| row | acc. % | weight density | MAC density | SOPs/sample (M) | "
        + " | ".join(f"{t}t b{b} ms (vs dense)" for t, b in CELLS)
        + " | vs dense eager (1t b1) | identical predictions |",
        "|---|---|---|---|---|" + "---|" * len(CELLS) + "---|---|",
    ]
    for r in rows:
        cells = {(c["threads"], c["batch"]): c for c in r["cells"]}
        timed = []
        for key in CELLS:
            c = cells.get(key)
            timed.append("-" if c is None else f"{c['ms_per_sample']['median']:.3f} ({c['vs'].get('dense', 0):.2f}x)")
        one = cells.get((1, 1))
        mac = "-" if r["mac_density"] is None else f"{r['mac_density']:.3f}"
        identical = min((c["identical_predictions"] for c in r["cells"]), default=0)
        eager = "-" if one is None else f"{one['vs_dense_eager']:.2f}x"
        lines.append(
            f"| {r['name']} | {r['test_acc'] * 100:.2f} | {r['weight_density']:.3f} | {mac} | "
            f"{r['sops_per_sample'] / 1e6:.3f} | " + " | ".join(timed) + " | "
            f"{eager} | "
            f"{identical:,} / {r['test_samples']:,} |"
        )
    ab = [r for r in rows if any("fusion_speedup" in c for c in r["cells"])]
    if ab:
        lines += [
            "",
            "## Fused blocks against the same deployed model unfused (ms per sample, unfused / fused)",
            "",
            "| row | " + " | ".join(f"{t}t b{b}" for t, b in CELLS) + " |",
            "|---|" + "---|" * len(CELLS),
        ]
        for r in ab:
            cells = {(c["threads"], c["batch"]): c for c in r["cells"]}
            parts = []
            for key in CELLS:
                c = cells.get(key)
                if c is None or "fusion_speedup" not in c:
                    parts.append("-")
                else:
                    parts.append(f"{c['unfused_ms_per_sample']['median']:.3f} ({c['fusion_speedup']:.2f}x)")
            lines.append(f"| {r['name']} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against deployed latency (batch 1, one thread) and against SOPs; the dense family joined by a line."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    colors = colormaps["tab20"]
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, (xlabel, value) in zip(
        axes,
        [
            ("deployed ms per sample (batch 1, 1 thread)", lambda r: next(
                (c["ms_per_sample"]["median"] for c in r["cells"] if (c["threads"], c["batch"]) == (1, 1)), None)),
            ("effective SOPs per sample (M)", lambda r: r["sops_per_sample"] / 1e6),
        ],
        strict=True,
    ):  # fmt: skip
        family = [r for name in DENSE_FAMILY for r in rows if r["name"] == name and value(r) is not None]
        if family:
            ax.plot(
                [value(r) for r in family], [r["test_acc"] * 100 for r in family], "k--", lw=1, label="dense family"
            )
        for k, r in enumerate(rows):
            v = value(r)
            if v is None:
                continue
            marker = "s" if r["name"] in DENSE_FAMILY else "o"
            color = colors(k % 20)  # one colour per row (the default cycle repeats after ten)
            ax.plot([v], [r["test_acc"] * 100], marker, color=color, label=r["name"])
            ax.annotate(r["name"], (v, r["test_acc"] * 100), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")  # the SOP axis leaves that corner empty
    fig.suptitle(f"{title}: accuracy against deployed latency and SOPs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the rows that are not finished yet (resumes interrupted ones)")
    train.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    train.add_argument("--rows", default=None, help="comma-separated rows (default: all, in table order)")
    train.add_argument("--epochs", type=int, default=None, help="epochs of every row (default: 5 MNIST, 12 N-MNIST)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--out", type=Path, default=None, help="run directories (default: bench/out/sparsity_pays/DATASET)"
    )
    meas = sub.add_parser("measure", help="deploy and time every finished row, round robin")
    meas.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    meas.add_argument(
        "--out", type=Path, default=None, help="run directories (default: bench/out/sparsity_pays/DATASET)"
    )
    meas.add_argument("--rounds", type=int, default=5)
    meas.add_argument("--samples", type=int, default=32, help="test samples timed per round at batch 1")
    meas.add_argument("--cells", default="1x1,1x64,2x1,2x64", help="THREADSxBATCH cells, comma-separated")
    meas.add_argument("--json", type=Path, default=None)
    meas.add_argument("--png", type=Path, default=None)
    meas.add_argument(
        "--unfused", action="store_true", help="also time each deployed model with its fused blocks unfused"
    )
    args = parser.parse_args(argv)
    table, default_epochs = DATASETS[args.dataset]
    out = args.out if args.out is not None else OUT_ROOT / args.dataset
    if args.command == "measure":
        load = loadavg()
        finished = [n for n in table if read_summary(out / n) is not None]
        if not finished:
            parser.error(f"no finished row under {out}: run the train command first")
        rows = [load_row(n, out / n) for n in finished]
        before = torch.get_num_threads()
        try:
            for cell in args.cells.split(","):
                threads, _, batch = cell.partition("x")
                measure_cell(rows, int(threads), int(batch), args.rounds, args.samples, args.unfused)
        finally:
            torch.set_num_threads(before)
        results = [r["result"] for r in rows]
        missing = [n for n in table if n not in finished]
        result = {
            "dataset": args.dataset,
            "rows": results,
            "not_trained": missing,
            "machine": machine(load, malloc_tuned=False),
        }
        emit(result, markdown(results), args.json)
        if args.png is not None:
            plot(results, args.png, f"{args.dataset.upper()} convnet, {default_epochs} epochs")
        return 0
    if args.command == "train":
        names = list(table) if args.rows is None else [r for r in args.rows.split(",") if r]
        unknown = sorted(set(names) - set(table))
        if unknown:
            parser.error(f"unknown rows {unknown}; rows are {list(table)}")
        epochs = default_epochs if args.epochs is None else args.epochs
        for name in names:
            wall = train_row(name, out, epochs, args.seed, table)
            print(f"{name}: {'already trained' if wall is None else f'trained in {wall:.0f} s'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
