"""Does sparsity pay? Accuracy against deployed latency and SOPs, sparse beside dense and narrower dense (issue 33).

Every MNIST row trains the convnet of ``configs/mnist_dense.toml`` (conv 1->32, conv 32->64, FC 3136->512, FC 512->10,
T = 4) for the same epochs (5) with the same seed (0); only the width or the ``[sparse]`` section differs:

- ``dense``, and the same network made narrower: ``dense_half`` (channels 16, 32, hidden 256) and ``dense_quarter``
  (8, 16, 128): the baseline sparsity has to beat to be worth anything;
- ESL and the PQ index at 10 %, each with the parameter budget (the papers') and the MAC budget
  (``sparse.budget = "macs"``); RigL at 10 % with the MAC budget; ESL with the MAC budget at a coarse granularity;
  SD-SNN (``configs/sdsnn_mnist.toml`` with ``N = 1``: its development needs ``2N + 3`` epochs).

``train`` runs the rows one after another, each in its own ``sparsesnn train`` process, into ``--out``; a finished
run is reused and an interrupted one resumed (``--resume``), so the bench can be built up over several sessions.
``measure`` deploys every finished run (:func:`sparsesnn.deploy.deploy`), checks its predictions against the
trained model on the whole test split, and times the runs round robin at batch 1 and 64, one and two threads; it
writes JSON, a Markdown table and a PNG plot of accuracy against latency and SOPs.

    PYTHONPATH=. python bench/sparsity_pays.py train [--rows dense,esl10_macs] [--epochs 5]
    PYTHONPATH=. python bench/sparsity_pays.py measure --json bench/out/sparsity_pays.json \\
        --png bench/out/sparsity_pays.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from sparsesnn.train.rundir import CHECKPOINT_FILE, read_summary

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "out" / "sparsity_pays" / "mnist"

ESL10 = ['sparse.method="esl"', "sparse.density=0.1"]
PQI10 = ["sparse.density=0.1"]
MACS = ['sparse.budget="macs"']

#: row -> (recipe, --set overrides); every row also gets run.epochs and run.seed
ROWS: dict[str, tuple[str, list[str]]] = {
    "dense": ("configs/mnist_dense.toml", []),
    "esl10_macs": ("configs/mnist_dense.toml", ESL10 + MACS),
    "dense_half": ("configs/mnist_dense.toml", ["model.params.channels=[16, 32]", "model.params.hidden=256"]),
    "dense_quarter": ("configs/mnist_dense.toml", ["model.params.channels=[8, 16]", "model.params.hidden=128"]),
    "esl10_params": ("configs/mnist_dense.toml", ESL10),
    "rigl10_macs": ("configs/mnist_dense.toml", ['sparse.method="rigl"', "sparse.density=0.1", *MACS]),
    "pqi10_macs": ("configs/pqi_mnist.toml", PQI10 + MACS),
    "esl10_macs_block": ("configs/mnist_dense.toml", ESL10 + MACS + ['sparse.granularity="block"']),
    "pqi10_params": ("configs/pqi_mnist.toml", PQI10),
    # N = 1: neuron pruning and regeneration first run at the end of epoch 2N + 2 = 4, so that 5 epochs develop
    "sdsnn": ("configs/sdsnn_mnist.toml", ["sparse.params.N=1"]),
}


def train_row(name: str, out: Path, epochs: int, seed: int) -> float | None:
    """Train (or resume) row ``name`` into ``out / name``; returns the wall time, None when it was already done."""
    recipe, overrides = ROWS[name]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the rows that are not finished yet (resumes interrupted ones)")
    train.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: all, in table order)")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.command == "train":
        names = [r for r in args.rows.split(",") if r]
        unknown = sorted(set(names) - set(ROWS))
        if unknown:
            parser.error(f"unknown rows {unknown}; rows are {list(ROWS)}")
        for name in names:
            wall = train_row(name, args.out, args.epochs, args.seed)
            print(f"{name}: {'already trained' if wall is None else f'trained in {wall:.0f} s'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
