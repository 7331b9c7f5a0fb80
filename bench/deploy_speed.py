"""Where the event-driven layers win: a map over weight density x firing rate for the MNIST convnet's hidden conv
(32 -> 64 channels, 3x3, on 14x14 spike maps), at batch 1 and 64 (T = 4), 1 and 2 threads.

For each cell: the dense ``nn.Conv2d`` time, the event-driven time with numba and with the pure-torch fallback, the
speed-up (dense / event), and the layer's effective synaptic operations per sample (spikes x surviving fan-out) beside
the dense multiply-accumulates, to show how far the event path's time follows the SOPs. Round robin: every variant
of a cell is timed once per round, ``--rounds`` rounds, the median kept. Random weights and spikes (seeded): the
cost of the event path depends on how many spikes meet how many surviving synapses, not on the values.

    PYTHONPATH=. python bench/deploy_speed.py --json deploy_speed.json [--quick]

This is the first part of issue 25 (the kernels and the map); the end-to-end runs of trained models are to follow.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import emit, loadavg, machine, summary

from sparsesnn.event_layers import EventConv2d, numba_available

SHAPE = (32, 14, 14)  # the convnet's hidden conv input: 32 channels of 14x14 (MNIST 28x28 after a 2x2 pool)
OUT_CHANNELS = 64
T = 4


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure_cell(density: float, rate: float, batch: int, rounds: int, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(SHAPE[0], OUT_CHANNELS, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(
            torch.randn(conv.weight.shape, generator=g) * (torch.rand(conv.weight.shape, generator=g) < density)
        )
    x = (torch.rand((T * batch, *SHAPE), generator=g) < rate).float()
    variants: dict[str, Any] = {"dense": conv}
    if numba_available():
        variants["event-numba"] = EventConv2d(conv, "numba")
    if batch == 1:  # the fallback's index arithmetic grows with the batch: a map of batch 64 would take minutes
        variants["event-torch"] = EventConv2d(conv, "torch")
    with torch.no_grad():
        reference = conv(x)
        for name, layer in variants.items():
            torch.testing.assert_close(layer(x), reference, atol=1e-4, rtol=1e-4, msg=name)  # and warm-up
        ms: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, layer in variants.items():
                ms[name].append(_time(lambda layer=layer: layer(x)))
    fan_out = (conv.weight != 0).sum(dim=(0, 2, 3)).double()  # surviving synapses per input channel
    spikes_per_channel = (x != 0).double().sum(dim=(0, 2, 3))
    sops = float((spikes_per_channel * fan_out).sum()) / batch  # per sample, over T steps (borders counted in)
    macs = OUT_CHANNELS * SHAPE[0] * 9 * SHAPE[1] * SHAPE[2] * T
    dense = statistics.median(ms["dense"])
    return {
        "density": density,
        "rate": rate,
        "batch": batch,
        "ms": {name: summary(v) for name, v in ms.items()},
        "speedup": {name: dense / statistics.median(v) for name, v in ms.items() if name != "dense"},
        "sops_per_sample": sops,
        "dense_macs_per_sample": macs,
        "sops_over_macs": sops / macs,
        "measured_input_rate": float((x != 0).float().mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 2 densities x 2 rates, batch 1, 1 thread (CI)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    load = loadavg()
    densities, rates, batches, threads = [0.05, 0.1, 0.3], [0.05, 0.15, 0.3], [1, 64], [1, 2]
    rounds = args.rounds
    if args.quick:
        densities, rates, batches, threads, rounds = [0.05, 0.3], [0.05, 0.3], [1], [1], 2
    cells = []
    before = torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for batch in batches:
                for density in densities:
                    for rate in rates:
                        cell = measure_cell(density, rate, batch, rounds, args.seed)
                        cell["threads"] = n_threads
                        cells.append(cell)
    finally:
        torch.set_num_threads(before)
    result = {
        "config": {"rounds": rounds, "quick": args.quick, "T": T, "layer": "Conv2d 32->64 3x3 pad 1 on 14x14"},
        "numba": numba_available(),
        "cells": cells,
        "machine": machine(load, malloc_tuned=False),
    }
    emit(result, markdown(result), args.json)
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Event-driven conv vs dense (the MNIST convnet's hidden conv, T = 4)",
        "",
        "| threads | batch | weight density | firing rate | SOPs / dense MACs | dense ms | event (numba) ms | "
        "event (torch) ms | speed-up numba | speed-up torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["cells"]:
        ms, up = c["ms"], c["speedup"]
        numba_ms = f"{ms['event-numba']['median']:.3f}" if "event-numba" in ms else "n/a"
        numba_up = f"{up['event-numba']:.2f}x" if "event-numba" in up else "n/a"
        torch_ms = f"{ms['event-torch']['median']:.3f}" if "event-torch" in ms else "not run"
        torch_up = f"{up['event-torch']:.2f}x" if "event-torch" in up else "not run"
        lines.append(
            f"| {c['threads']} | {c['batch']} | {c['density']:.2f} | {c['rate']:.2f} | {c['sops_over_macs']:.4f} | "
            f"{ms['dense']['median']:.3f} | {numba_ms} | {torch_ms} | {numba_up} | {torch_up} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
