"""CPU inference time of a trained run's model before and after compaction (dead neurons physically removed).

The "masked" model is the run's model with its masks baked in (same tensor shapes as the dense network, so the same
cost); the "compacted" model is what ``sparsesnn export`` writes. Both run the same test batch, round-robin.

    python bench/run_inference.py bench/out/sdsnn_mnist_full --json bench/out/sdsnn_inference.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchutil import emit, loadavg, machine, summary

from sparsesnn.interop.export import prepare_export
from sparsesnn.train.runtime import tune_allocator
from sparsesnn.train.trainer import CHECKPOINTS, Trainer


def _time(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        return (time.perf_counter() - start) / repeats


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = loadavg()
    bundle = prepare_export(args.run_dir, samples=args.batch, checkpoint=args.checkpoint)
    masked = Trainer.resume(args.run_dir, quiet=True, checkpoint=args.checkpoint).learner.finalize().cpu().eval()
    small, x = bundle.model, bundle.example
    with torch.no_grad():
        diff = float((masked(x) - small(x)).abs().max())
    for m in (masked, small):  # warm-up (compiled neuron kernels, allocator)
        _time(m, x, 1)
    t_masked, t_small = [], []
    for r in range(args.rounds):
        pair = [(masked, t_masked), (small, t_small)]
        for model, out in pair if r % 2 == 0 else reversed(pair):
            out.append(_time(model, x, args.repeats))
    ratios = [a / b for a, b in zip(t_masked, t_small, strict=True)]

    def params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    return {
        "benchmark": "inference of a trained run, masked (dense shapes) vs compacted",
        "run_dir": str(args.run_dir),
        "checkpoint": args.checkpoint,
        "batch": int(x.shape[1]),
        "time_steps": int(x.shape[0]),
        "machine": machine(load_start, malloc_tuned=True),
        "params_masked": params(masked),
        "params_compacted": params(small),
        "removed_units": {k: {"before": a, "after": b} for k, (a, b) in bundle.report.removed.items()},
        "max_abs_output_difference": diff,
        "masked_ms": summary([t * 1e3 for t in t_masked]),
        "compacted_ms": summary([t * 1e3 for t in t_small]),
        "speedup": summary(ratios),
    }


def markdown(r: dict[str, Any]) -> str:
    s = r["speedup"]
    return "\n".join(
        [
            f"## {r['run_dir']}: batch {r['batch']}, T = {r['time_steps']}",
            "",
            "| model | parameters | ms per batch, median |",
            "|---|---|---|",
            f"| masked (dense shapes) | {r['params_masked']:,} | {r['masked_ms']['median']:.1f} |",
            f"| compacted | {r['params_compacted']:,} | {r['compacted_ms']['median']:.1f} |",
            "",
            f"speed-up {s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}); max output difference "
            f"{r['max_abs_output_difference']:.1e}; units removed: {r['removed_units']}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", choices=tuple(CHECKPOINTS), default="last", help="which state of the run")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    tune_allocator()
    torch.set_num_threads(args.threads)
    result = run(args)
    emit(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
