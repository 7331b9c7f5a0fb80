"""Deployed trained models end to end, and a map of where the event-driven layers win (issues 25 and 33).

**Trained runs** (``--run NAME=RUN_DIR``, repeatable): each run's finalized model (masks baked in: "the same network,
dense"), its compacted model, the compacted model rewritten by deploy's exact passes with every layer dense, and the
deployed model (:func:`sparsesnn.deploy.deploy`, choices measured on this machine at that batch size and thread
count), timed round robin per sample at batch 1 (the first ``--samples`` test samples) and at batch 64, with 1 and 2
threads. The deployed model's predictions are compared with the finalized model's on the whole test split, and its
accuracy is reported; the effective SOPs per sample (:class:`sparsesnn.metrics.SynapticOpsMonitor`) stand beside.

**The map** (skipped with ``--no-map``; issues 25 and 33): the MNIST convnet's hidden conv (32 -> 64 channels, 3x3,
on 14x14 spike maps, T = 4) at firing rates 5 / 15 / 30 %, batch 1 and 64, 1 and 2 threads. In each (threads, batch,
rate) group the dense ``nn.Conv2d`` and the event conv at every weight mask of :data:`MASKS` (density 1.0; 30 % and
10 % scattered; 10 % and 5 % in blocks of 8 output channels, the structure ``sparse.granularity = "block"`` learns)
run on the same spikes, round robin (every variant once per round, ``--rounds`` rounds, the median kept). The event
conv takes the layout its cost model picks (recorded). Reported: time, speed-up against the dense conv and against
the event conv at density 1.0 (the same kernel without sparsity), the effective synaptic operations per sample
(spikes x surviving fan-out) beside the dense multiply-accumulates, and the targets of issue 33 at a 15 % rate.
``--fallback`` also times the pure-torch fallback at batch 1. Random weights and spikes (seeded): the cost of the
event path depends on how many spikes meet how many surviving synapses, not on the values.

    PYTHONPATH=. python bench/deploy_speed.py --json deploy_speed.json [--quick] [--no-map] \\
        [--run esl10=bench/out/deploy_runs/esl10 ...]
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
from benchutil import emit, loadavg, machine, round_robin_per_sample, summary

from sparsesnn.deploy.event_layers import EventConv2d, numba_available

SHAPE = (32, 14, 14)  # the convnet's hidden conv input: 32 channels of 14x14 (MNIST 28x28 after a 2x2 pool)
OUT_CHANNELS = 64
T = 4


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


#: the map's weight masks: (density, structure); "scattered" keeps single weights at random, "blocks" whole blocks of 8
#: consecutive output channels at one (input channel, tap), as ``sparse.granularity = "block"`` learns them
MASKS: list[tuple[float, str]] = [
    (1.0, "dense"),
    (0.3, "scattered"),
    (0.1, "scattered"),
    (0.1, "blocks"),
    (0.05, "blocks"),
]


def variant_name(density: float, structure: str) -> str:
    return f"event {density:.2f} {structure}"


def masked_conv(density: float, structure: str, g: torch.Generator) -> nn.Conv2d:
    conv = nn.Conv2d(SHAPE[0], OUT_CHANNELS, 3, padding=1, bias=False)
    shape = conv.weight.shape
    if structure == "blocks":
        keep = (torch.rand((shape[0] // 8, *shape[1:]), generator=g) < density).repeat_interleave(8, 0)
    else:
        keep = torch.rand(shape, generator=g) < density
    with torch.no_grad():
        conv.weight.copy_(torch.randn(shape, generator=g) * keep)
    return conv


def measure_group(
    rate: float, batch: int, rounds: int, seed: int, masks: list[tuple[float, str]], fallback: bool
) -> dict[str, Any]:
    """One firing rate and batch: the dense conv and the event conv at every mask, timed round robin on the same
    spikes (one variant after the other in each round, ``rounds`` rounds, the median kept)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((T * batch, *SHAPE), generator=g) < rate).float()
    convs = {variant_name(d, st): masked_conv(d, st, g) for d, st in masks}
    variants: dict[str, Any] = {"dense conv": next(iter(convs.values()))}
    references: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, conv in convs.items():
            if numba_available():
                variants[name] = EventConv2d(conv, "numba")
            if fallback and batch == 1:  # the fallback's index arithmetic grows with the batch
                variants[f"{name} (torch)"] = EventConv2d(conv, "torch")
            references[name] = conv(x)
        for name, layer in variants.items():
            key = "event 1.00 dense" if name == "dense conv" else name.removesuffix(" (torch)")
            torch.testing.assert_close(layer(x), references[key], atol=1e-4, rtol=1e-4, msg=name)  # and warm-up
        ms: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, layer in variants.items():
                ms[name].append(_time(lambda layer=layer: layer(x)))
    macs = OUT_CHANNELS * SHAPE[0] * 9 * SHAPE[1] * SHAPE[2] * T
    spikes_per_channel = (x != 0).double().sum(dim=(0, 2, 3))
    sops = {}
    for name, conv in convs.items():
        fan_out = (conv.weight != 0).sum(dim=(0, 2, 3)).double()  # surviving synapses per input channel
        sops[name] = float((spikes_per_channel * fan_out).sum()) / batch  # per sample, over T steps
    med = {name: statistics.median(v) for name, v in ms.items()}
    full = med.get(variant_name(1.0, "dense"))
    return {
        "rate": rate,
        "batch": batch,
        "ms": {name: summary(v) for name, v in ms.items()},
        "layout": {name: layer.layout for name, layer in variants.items() if isinstance(layer, EventConv2d)},
        "vs_dense_conv": {name: med["dense conv"] / m for name, m in med.items() if name != "dense conv"},
        "vs_event_at_density_1": {name: full / m for name, m in med.items() if full is not None and "event" in name},
        "sops_per_sample": sops,
        "dense_macs_per_sample": macs,
        "sops_over_macs": {name: v / macs for name, v in sops.items()},
        "measured_input_rate": float((x != 0).float().mean()),
    }


def map_targets(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The map's targets of issue 33 at a 15 % firing rate, from the measured groups (None where not measured)."""

    def group(threads: int, batch: int) -> dict[str, Any] | None:
        return next((g for g in groups if (g["threads"], g["batch"], g["rate"]) == (threads, batch, 0.15)), None)

    out: dict[str, Any] = {}
    one = group(1, 1)
    if one is not None:
        for structure in ("scattered", "blocks"):
            name = variant_name(0.1, structure)
            if name in one["vs_dense_conv"]:
                out[f"batch 1, 1 thread, density 0.10 {structure}: vs the same kernel at density 1.0 (>= 2.5x)"] = one[
                    "vs_event_at_density_1"
                ][name]
                out[f"batch 1, 1 thread, density 0.10 {structure}: vs the dense conv (>= 4x)"] = one["vs_dense_conv"][
                    name
                ]
    b1, b2 = group(1, 64), group(2, 64)
    if b2 is not None:
        for name, up in b2["vs_dense_conv"].items():
            out[f"batch 64, 2 threads, {name}: vs the dense conv (> 1x)"] = up
    if b1 is not None and b2 is not None:
        for name in b2["ms"]:
            if name in b1["ms"]:
                out[f"batch 64, {name}: 2 threads vs 1 (>= 1.5x)"] = b1["ms"][name]["median"] / b2["ms"][name]["median"]
    return out


@torch.no_grad()
def measure_run(
    name: str, run_dir: Path, threads: list[int], batches: list[int], rounds: int, samples: int
) -> dict[str, Any]:
    """One trained run, end to end (see the module docstring)."""
    from sparsesnn.deploy.api import deploy
    from sparsesnn.interop.export import prepare_export
    from sparsesnn.metrics import SynapticOpsMonitor, connections

    bundle = prepare_export(run_dir, device="cpu")
    assert bundle.test_batches is not None and bundle.finalized is not None
    dense, compacted = bundle.finalized, bundle.model
    test = list(bundle.test_batches(256))
    n_test = sum(int(y.numel()) for _, y in test)
    first = torch.cat([x for x, _ in test], dim=1)[:, : max(samples, max(batches))]
    monitor = SynapticOpsMonitor(compacted)
    with monitor.active():
        for x, _ in test[:4]:
            compacted(x)
    ops = monitor.result(sum(int(x.shape[1]) for x, _ in test[:4]))
    dense_predictions = torch.cat([dense(x).mean(0).argmax(-1) for x, _ in test])
    targets = torch.cat([y for _, y in test])
    cells = []
    before = torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for batch in batches:
                inputs = [first[:, i : i + 1] for i in range(samples)] if batch == 1 else [first[:, :batch]]
                deployed, report = deploy(compacted, inputs[0])
                rewritten, _ = deploy(compacted, inputs[0], choices={})
                predictions = torch.cat([deployed(x).mean(0).argmax(-1) for x, _ in test])
                models = {"dense": dense, "compacted": compacted, "rewritten": rewritten, "deployed": deployed}
                ms = round_robin_per_sample(models, inputs, rounds)
                med = {k: statistics.median(v) for k, v in ms.items()}
                cells.append(
                    {
                        "threads": n_threads,
                        "batch": batch,
                        "ms_per_sample": {k: summary(v) for k, v in ms.items()},
                        "speedup_vs_dense": {k: med["dense"] / v for k, v in med.items()},
                        "speedup_vs_compacted": {k: med["compacted"] / v for k, v in med.items()},
                        "identical_predictions": int((predictions == dense_predictions).sum()),
                        "test_acc_deployed": float((predictions == targets).float().mean()),
                        "event_layers": [k for k, c in report.layers.items() if c.event],
                        "deploy": report.as_dict(),
                    }
                )
                print(f"[{name}] {n_threads} thread(s), batch {batch}: {med}", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(before)
    return {
        "name": name,
        "run": str(run_dir),
        "test_samples": n_test,
        "test_acc_dense": float((dense_predictions == targets).float().mean()),
        "weight_density": connections(dense)["density"],
        "compaction": bundle.report.as_dict(),
        "sops_per_sample": ops["Effective_ACs"],
        "analog_macs_per_sample": ops["Effective_MACs"],
        "dense_ops_per_sample": ops["Dense"],
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 2 densities x 2 rates, batch 1, 1 thread (CI)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="a trained run to deploy")
    p.add_argument("--samples", type=int, default=64, help="test samples timed at batch 1 (per round)")
    p.add_argument("--no-map", action="store_true", help="only the trained runs")
    p.add_argument("--fallback", action="store_true", help="also time the pure-torch fallback (batch 1)")
    args = p.parse_args(argv)
    load = loadavg()
    masks, rates, batches, threads = MASKS, [0.05, 0.15, 0.3], [1, 64], [1, 2]
    rounds = args.rounds
    if args.quick:
        masks, rates, batches, threads, rounds = (
            [(1.0, "dense"), (0.1, "scattered"), (0.1, "blocks")],
            [0.05, 0.3],
            [1],
            [1],
            2,
        )
    runs = []
    for item in args.run:
        name, sep, path = item.partition("=")
        if not sep:
            p.error(f"--run takes NAME=RUN_DIR, got {item!r}")
        runs.append(measure_run(name, Path(path), threads, batches, rounds, 4 if args.quick else args.samples))
    groups = []
    before = torch.get_num_threads()
    try:
        for n_threads in [] if args.no_map else threads:
            torch.set_num_threads(n_threads)
            for batch in batches:
                for rate in rates:
                    group = measure_group(rate, batch, rounds, args.seed, masks, args.fallback)
                    group["threads"] = n_threads
                    groups.append(group)
                    print(f"[map] {n_threads} thread(s), batch {batch}, rate {rate}", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(before)
    result = {
        "config": {
            "rounds": rounds,
            "quick": args.quick,
            "T": T,
            "layer": "Conv2d 32->64 3x3 pad 1 on 14x14",
            "masks": masks,
        },
        "numba": numba_available(),
        "runs": runs,
        "cells": groups,
        "targets": map_targets(groups),
        "machine": machine(load, malloc_tuned=False),
    }
    emit(result, markdown(result), args.json)
    return 0


def markdown_runs(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Trained models deployed (time per sample; speed-up = dense / deployed)",
        "",
        "| run | threads | batch | weight density | SOPs/sample (M) | dense ms | compacted ms | rewritten ms | "
        "deployed ms | speed-up vs dense | vs compacted | identical predictions | acc. % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for c in r["cells"]:
            ms = {k: v["median"] for k, v in c["ms_per_sample"].items()}
            lines.append(
                f"| {r['name']} | {c['threads']} | {c['batch']} | {r['weight_density']:.3f} | "
                f"{r['sops_per_sample'] / 1e6:.3f} | {ms['dense']:.3f} | {ms['compacted']:.3f} | "
                f"{ms['rewritten']:.3f} | {ms['deployed']:.3f} | **{c['speedup_vs_dense']['deployed']:.2f}x** | "
                f"{c['speedup_vs_compacted']['deployed']:.2f}x | {c['identical_predictions']:,} / "
                f"{r['test_samples']:,} | {c['test_acc_deployed'] * 100:.2f} |"
            )
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    lines = markdown_runs(result["runs"]) if result["runs"] else []
    if result["cells"]:
        names = list(result["cells"][0]["ms"])
        lines += [
            "## Event-driven conv vs dense (the MNIST convnet's hidden conv, T = 4; ms, speed-up vs the dense conv)",
            "",
            "| threads | batch | rate | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        for c in result["cells"]:
            up = c["vs_dense_conv"]
            row = [f"{c['ms'][n]['median']:.3f}" + (f" ({up[n]:.2f}x)" if n in up else "") for n in names]
            lines.append(f"| {c['threads']} | {c['batch']} | {c['rate']:.2f} | " + " | ".join(row) + " |")
        lines += ["", "Layouts chosen: " + ", ".join(f"{k}: {v}" for k, v in result["cells"][0]["layout"].items()), ""]
    if result.get("targets"):
        lines += ["| target (15 % firing rate) | measured |", "|---|---|"]
        lines += [f"| {k} | {v:.2f}x |" for k, v in result["targets"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
