"""Training throughput with 1 process and with N processes (torchrun, gloo on CPU / NCCL on CUDA), side by side.

Each round trains the same recipe for a fixed number of steps once per configuration, alternating: 1 process with
``--threads`` intra-op threads, and N processes with ``threads // N`` threads each (so both use the same cores). The
global batch is the recipe's ``data.batch_size`` in both cases. Reported: samples/s of the training epoch (from
``metrics.jsonl``, evaluation excluded) per round, and the per-round ratio N-process / 1-process.

    python bench/ddp_scaling.py --json bench/out/ddp_scaling.json
    python bench/ddp_scaling.py --config configs/esl_mnist.toml --procs 2 --steps 60 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchutil import emit, loadavg, machine, summary

from sparsesnn.train.rundir import read_metrics

REPO = Path(__file__).resolve().parents[1]


def train_once(config: Path, procs: int, threads: int, steps: int, run_dir: Path) -> float:
    """Samples/s of one training epoch of ``steps`` steps."""
    sets = ["run.epochs=1", f"run.max_steps_per_epoch={steps}", f"run.threads={threads}", "data.max_test_samples=500"]
    args = ["-m", "sparsesnn", "train", "--quiet", "--config", str(config), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    if procs > 1:
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
        cmd = [torchrun, "--standalone", f"--nproc-per-node={procs}", *args[1:]]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    record = read_metrics(run_dir)[-1]
    return float(record["samples_per_s"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = loadavg()
    one: list[float] = []
    many: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = [(1, args.threads), (args.procs, max(1, args.threads // args.procs))]
            if r % 2:
                order.reverse()
            for procs, threads in order:
                rate = train_once(args.config, procs, threads, args.steps, Path(tmp) / f"r{r}_p{procs}")
                (one if procs == 1 else many).append(rate)
                print(
                    f"round {r + 1}: {procs} process(es) x {threads} thread(s): {rate:.0f} samples/s",
                    file=sys.stderr,
                    flush=True,
                )
    ratios = [m / o for m, o in zip(many, one, strict=True)]
    return {
        "benchmark": "training samples/s, 1 process vs N processes (torchrun)",
        "config": {
            "recipe": str(args.config),
            "steps": args.steps,
            "rounds": args.rounds,
            "procs": args.procs,
            "threads_total": args.threads,
        },
        "machine": machine(load_start, malloc_tuned=True),
        "one_process": summary(one),
        "n_processes": summary(many),
        "ratio_n_over_one": summary(ratios),
    }


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    o, n, r = result["one_process"], result["n_processes"], result["ratio_n_over_one"]
    return "\n".join(
        [
            f"## {c['recipe']}: {c['steps']} steps per run, {c['rounds']} rounds, "
            f"{c['threads_total']} threads in total",
            "",
            "| processes | samples/s, median (min-max) |",
            "|---|---|",
            f"| 1 x {c['threads_total']} threads | {o['median']:.0f} ({o['min']:.0f}-{o['max']:.0f}) |",
            f"| {c['procs']} x {max(1, c['threads_total'] // c['procs'])} thread(s) | {n['median']:.0f} "
            f"({n['min']:.0f}-{n['max']:.0f}) |",
            "",
            f"{c['procs']} processes / 1 process, per round: {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "mnist_dense.toml")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads in total (split among the processes)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    result = run(args)
    emit(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
