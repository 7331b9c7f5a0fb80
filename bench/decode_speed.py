"""Decode speed of the N-MNIST files: sparsesnn's vectorised reader against Tonic's, side by side in one process.

Reproduce (from the repository root, inside the project's virtualenv, with the dev extra for Tonic)::

    python bench/decode_speed.py                        # 7 alternating rounds over every file in ../shared/data/nmnist
    python bench/decode_speed.py --rounds 11 --json decode.json
    python bench/decode_speed.py --root /path/to/N-MNIST --quick

What is timed
    One round decodes every ``*.bin`` under ``--root`` (recursively; the 1,000 + 100 subset and Tonic's sample in
    ../shared/data/nmnist: 1,101 files, 4.5 M events) from the file to a structured event array:
    ``sparsesnn.data.events.read_nmnist(path)`` (read, decode, validate coordinates and time order, pack into
    ``EVENT_DTYPE``) and ``tonic.io.read_mnist_file(path, dtype)`` with the dtype of Tonic's own ``NMNIST`` dataset
    (``tonic.datasets.NMNIST.dtype``). Both read the same files, which the first untimed round brings into the page
    cache; the first round also checks that both give identical events (x, y, t, p), file by file.

Method
    Rounds alternate which reader goes first (ours, Tonic, ours, ...), each reader timed with
    ``time.perf_counter`` around its whole pass over the files. Absolute numbers swing by +-30 % on a shared 2-core
    machine (../shared/PERF-NOTES.md), so the headline is the per-round ratio ``ours / tonic`` in events per second,
    whose median and range over rounds are reported; the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sparsesnn.data.events import read_nmnist

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder searched recursively for *.bin files")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (>= 5 for a median worth quoting)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds over at most 100 files")
    p.add_argument("--json", type=Path, help="also write the JSON result to this file")
    return p.parse_args(argv)


def _pass(files: Sequence[Path], read: Callable[[Path], np.ndarray]) -> tuple[float, int]:
    start = time.perf_counter()
    events = 0
    for f in files:
        events += len(read(f))
    return time.perf_counter() - start, events


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tonic
    import tonic.io

    files = sorted(args.root.rglob("*.bin"))
    if not files:
        raise SystemExit(f"no .bin files under {args.root}")
    rounds = args.rounds
    if args.quick:
        files, rounds = files[:100], 2
    dtype = tonic.datasets.NMNIST.dtype

    def ours(path: Path) -> np.ndarray:
        return read_nmnist(path)

    def theirs(path: Path) -> np.ndarray:
        return tonic.io.read_mnist_file(str(path), dtype=dtype)

    load_start = _loadavg()
    mismatched = []
    for f in files:  # warm-up: page cache, imports, and the event-for-event check
        a, b = ours(f), theirs(f)
        if len(a) != len(b) or any(not np.array_equal(a[k].astype(np.int64), b[k].astype(np.int64)) for k in "xytp"):
            mismatched.append(str(f))
    per_round = []
    for r in range(rounds):
        order = [("sparsesnn", ours), ("tonic", theirs)]
        if r % 2:
            order.reverse()
        timing = {}
        for name, read in order:
            seconds, events = _pass(files, read)
            timing[name] = {"seconds": seconds, "events": events, "events_per_s": events / seconds}
        timing["ratio"] = timing["sparsesnn"]["events_per_s"] / timing["tonic"]["events_per_s"]
        per_round.append(timing)
    ratios = [t["ratio"] for t in per_round]

    def median_of(name: str, key: str) -> float:
        return statistics.median(t[name][key] for t in per_round)

    return {
        "benchmark": "decode_speed",
        "files": len(files),
        "events_per_pass": per_round[0]["sparsesnn"]["events"],
        "rounds": rounds,
        "identical_events": not mismatched,
        "mismatched_files": mismatched[:10],
        "sparsesnn": {
            "median_seconds": median_of("sparsesnn", "seconds"),
            "median_events_per_s": median_of("sparsesnn", "events_per_s"),
        },
        "tonic": {
            "version": getattr(tonic, "__version__", "unknown"),
            "median_seconds": median_of("tonic", "seconds"),
            "median_events_per_s": median_of("tonic", "events_per_s"),
        },
        "ratio_sparsesnn_over_tonic": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        },
        "per_round": per_round,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    ratio = result["ratio_sparsesnn_over_tonic"]
    lines = [
        f"N-MNIST decoding: {result['files']} files, {result['events_per_pass'] / 1e6:.2f} M events per pass, "
        f"{result['rounds']} alternating rounds, medians (load average {result['machine']['loadavg_start']} -> "
        f"{result['machine']['loadavg_end']}); identical events: {result['identical_events']}",
        "",
        "| reader | time per pass | events/s | vs Tonic |",
        "|---|---|---|---|",
        f"| sparsesnn `read_nmnist` | {result['sparsesnn']['median_seconds'] * 1e3:.0f} ms "
        f"| {result['sparsesnn']['median_events_per_s'] / 1e6:.1f} M "
        f"| {ratio['median']:.2f}x (rounds {ratio['min']:.2f}-{ratio['max']:.2f}) |",
        f"| Tonic {result['tonic']['version']} `read_mnist_file` | {result['tonic']['median_seconds'] * 1e3:.0f} ms "
        f"| {result['tonic']['median_events_per_s'] / 1e6:.1f} M | 1.00x |",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["identical_events"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
