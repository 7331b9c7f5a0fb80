"""Accuracy / connections / SOPs of several methods under one budget: the method tables of BENCHMARKS.md.

Every row trains the same network on the same data with the same epoch budget and seed; only the ``[sparse]``
section (and, for EvoKD, ``[distill]``) differs. Rows run one after another, each in its own ``sparsesnn train``
process; an existing finished run directory is reused, so an interrupted table resumes where it stopped. The dense
row comes first: it is the reference for "loss vs dense" and the teacher of the EvoKD rows.

    python bench/method_table.py --table mnist-baselines --epochs 5 --json bench/out/mnist_baselines.json
    python bench/method_table.py --table mnist-esl --epochs 5
    python bench/method_table.py --table nmnist-esl --epochs 15
    python bench/method_table.py --table mnist-baselines --epochs 5 --seed 1   # bench/out/mnist_dense-5ep-seed1

Columns: test accuracy of the last epoch (best in brackets), loss vs dense in points, connection density over the
masked layers and over every Conv/Linear, effective SOPs per sample (spikes x live fan-out; the analog first layer
is counted separately as MACs), energy estimate, wall time of the training.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchutil import emit

from sparsesnn.train.rundir import CHECKPOINT_FILE, read_metrics, read_summary

REPO = Path(__file__).resolve().parents[1]

#: ESL at four densities and EvoKD at 10 % (issue 6), beside the dense row that is also EvoKD's teacher
ESL_ROWS: dict[str, list[str]] = {
    "dense": [],
    **{f"ESL {round(d * 100)}%": ['sparse.method="esl"', f"sparse.density={d}"] for d in (0.5, 0.2, 0.1, 0.05)},
    "EvoKD 10%": ['sparse.method="evokd"', "sparse.density=0.1", "+distill"],
}

#: SD-SNN from a dense start with the readout dense (configs/sdsnn_mnist.toml's [sparse] but N)
SDSNN = ['sparse.method="sdsnn"', "sparse.density=1.0", "sparse.dense_last=true"]

#: table name -> (base recipe, rows: label -> list of --set overrides)
TABLES: dict[str, tuple[str, dict[str, list[str]]]] = {
    "mnist-baselines": (
        "configs/mnist_dense.toml",
        {
            "dense": [],
            "static 10%": ['sparse.method="static"', "sparse.density=0.1"],
            "SET 10%": ['sparse.method="set"', "sparse.density=0.1"],
            "RigL 10%": ['sparse.method="rigl"', "sparse.density=0.1"],
            "GMP 10%": ['sparse.method="gmp"', "sparse.density=0.1"],
            # 5 rounds of one epoch each (the budget is the table's), 37 % pruned per round, rewound to init
            "LTH 10%": ['sparse.method="lth"', "sparse.density=0.1"],
        },
    ),
    "mnist-esl": (
        "configs/mnist_dense.toml",
        ESL_ROWS,
    ),
    "mnist-pqi": (
        "configs/mnist_dense.toml",
        {
            "dense": [],
            "PQ neuron-wise": ['sparse.method="pqi"', "sparse.density=0.5", 'sparse.params={ scope = "neuron" }'],
            "PQ layer-wise": ['sparse.method="pqi"', "sparse.density=0.5", 'sparse.params={ scope = "layer" }'],
        },
    ),
    # configs/sdsnn_mnist.toml trains as configs/mnist_dense.toml, so its rows share that dense row; N = 1 so that,
    # in a short budget, pruning comes at the end of epoch 2N + 2 = 4 (1-based; none at the end of the last, which
    # trains the final structure; the recipe's N = 2 suits 15 epochs)
    "mnist-sdsnn": (
        "configs/mnist_dense.toml",
        {
            "dense": [],
            "SD-SNN": [*SDSNN, "sparse.params={ N = 1 }"],
            "SD-SNN without constraint": [*SDSNN, "sparse.params={ N = 1, constraint = false }"],
            "SD-SNN without regeneration": [*SDSNN, "sparse.params={ N = 1, regeneration = false }"],
        },
    ),
    "nmnist-esl": (
        "configs/nmnist_convnet.toml",
        ESL_ROWS,
    ),
}


def _slug(label: str) -> str:
    return label.lower().replace(" ", "_").replace("%", "pct")


def run_row(
    base: str, label: str, overrides: list[str], out: Path, epochs: int, dense_dir: Path, seed: int | None = None
) -> dict[str, Any]:
    run_dir = out / _slug(label)
    sets = [o for o in overrides if o != "+distill"]
    if "+distill" in overrides:
        sets += ['distill.source="run"', f'distill.teacher_run="{dense_dir}"', 'distill.divergence="reverse"']
    sets += [f"run.epochs={epochs}", f'run.name="{_slug(label)}"']
    if seed is not None:
        sets.append(f"run.seed={seed}")
    wall = None
    if read_summary(run_dir) is None:
        cmd = [
            sys.executable,
            "-m",
            "sparsesnn",
            "train",
            "--quiet",
            "--config",
            str(REPO / base),
            "--run-dir",
            str(run_dir),
        ]
        if (run_dir / CHECKPOINT_FILE).exists():
            cmd = [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--resume", str(run_dir)]
        else:
            for s in sets:
                cmd += ["--set", s]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        wall = time.perf_counter() - t0
    summary = read_summary(run_dir)
    if summary is None:
        raise SystemExit(f"{run_dir}: the run did not finish (no readable summary.json)")
    last = read_metrics(run_dir)[-1]
    return {
        "label": label,
        "run_dir": str(run_dir),
        "command": f"sparsesnn train --config {base} " + " ".join(f"--set {s}" for s in sets),
        "test_acc": last["test_acc"],
        "best_test_acc": summary["best_test_acc"],
        "density": last["density"],
        "density_all": last["density_all"],
        "sops": last["sops"],
        "macs": last["macs"],
        "energy_uJ": last["energy_uJ"],
        "firing_rate": last["firing_rate"],
        "train_time_s": summary["train_time_s"],
        "wall_s": wall,
    }


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    dense = next((r for r in rows if r["label"] == "dense"), None)
    lines = [
        f"## {title}",
        "",
        "| method | test acc. % (best) | loss vs dense, pt | conn. % (masked / all) | SOPs/sample (M) | MACs (M) |"
        " energy uJ | train time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = f"{(dense['test_acc'] - r['test_acc']) * 100:+.2f}" if dense and r is not dense else "-"
        lines.append(
            f"| {r['label']} | {r['test_acc'] * 100:.2f} ({r['best_test_acc'] * 100:.2f}) | {loss} | "
            f"{r['density'] * 100:.1f} / {r['density_all'] * 100:.1f} | {r['sops'] / 1e6:.3f} | {r['macs'] / 1e6:.3f} |"
            f" {r['energy_uJ']:.2f} | {r['train_time_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", choices=sorted(TABLES), required=True)
    p.add_argument("--epochs", type=int, required=True, help="the budget every row trains for")
    p.add_argument("--out", type=Path, default=None, help="directory of the run dirs (default bench/out/<table>)")
    p.add_argument("--rows", nargs="*", help="only these row labels")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="train every row with this seed (default: the recipe's); its own directory, *-seed<N>",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    base, rows = TABLES[args.table]
    # tables on the same recipe and budget share one directory, so they share the dense row (and its teacher role)
    seed_part = "" if args.seed is None else f"-seed{args.seed}"
    out = (args.out or REPO / "bench" / "out" / f"{Path(base).stem}-{args.epochs}ep{seed_part}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    dense_dir = out / _slug("dense")
    results = []
    for label, overrides in rows.items():
        if args.rows and label not in args.rows:
            continue
        print(f"[{args.table}] {label} ...", file=sys.stderr, flush=True)
        results.append(run_row(base, label, overrides, out, args.epochs, dense_dir, args.seed))
    report = {
        "table": args.table,
        "seed": args.seed,
        "base_config": base,
        "epochs": args.epochs,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "rows": results,
    }
    seed_note = "" if args.seed is None else f", seed {args.seed}"
    emit(report, markdown(results, f"{args.table}, {args.epochs} epochs{seed_note} ({base})"), args.json)
    return report


if __name__ == "__main__":
    main()
