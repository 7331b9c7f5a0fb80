"""Streaming decode + binning speed: N-MNIST files read incrementally and binned window by window, on one thread.

Reproduce (from the repository root, inside the project's virtualenv)::

    python bench/stream_binning.py                       # 7 rounds over the 100 N-MNIST test files in ../shared/data
    python bench/stream_binning.py --rounds 11 --json stream.json
    python bench/stream_binning.py --quick               # smoke test: 2 rounds over 10 files

What is timed
    One pass streams every ``*.bin`` under ``--root`` (default the N-MNIST test split, 100 files, 0.39 M events):
    ``sparsesnn.data.stream.iter_nmnist(path, chunk_events=C)`` (read C 5-byte records, decode and validate them)
    feeding ``binner.push(chunk)`` of one ``EventBinner.for_dataset("nmnist")``, ``reset()`` per file (the live
    framing of the dataset default: T = 8 windows of 300 ms / 8 = 37.5 ms, 2 x 34 x 34 float32 frames), then
    ``flush()``, for each chunk size C. The
    reference row is the whole-sample path of the dataset (``read_nmnist`` + ``ToFrames`` with T = 8), which reads
    a file at once. An untimed first pass warms the page cache and imports, and checks that the streamed frames of
    every file equal those of :meth:`EventBinner.for_sample` replaying the dataset's framing (the binner against
    itself is not the point; the equality with the dataset is tests/test_event_stream.py's).

Method
    Single-threaded (``torch.set_num_threads(1)``; the work is numpy on one core). Rounds rotate which variant goes
    first; each pass is timed with ``time.perf_counter``; the headline is the median events/s over rounds (events
    decoded and binned per second of wall time), with min and max. Absolute numbers swing by +-30 % on a shared
    2-core machine; the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchutil import loadavg, machine, version

from sparsesnn.data.events import read_nmnist
from sparsesnn.data.frames import ToFrames
from sparsesnn.data.stream import EventBinner, iter_nmnist

_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist" / "Test"
DEFAULT_ROOT = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data/nmnist/Test")
CHUNKS = (64, 1024, 65_536)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder searched recursively for *.bin files")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (>= 5 for a median worth quoting)")
    p.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS), help="events per chunk of the reader")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds over at most 10 files")
    p.add_argument("--json", type=Path, help="also write the JSON result to this file")
    return p.parse_args(argv)


def streamed(chunk: int) -> Callable[[Path], tuple[int, int]]:
    binner = EventBinner.for_dataset("nmnist")  # built once (it validates the dataset settings), reset per file

    def one(path: Path) -> tuple[int, int]:
        binner.reset()
        events = frames = 0
        for part in iter_nmnist(path, chunk_events=chunk):
            events += len(part)
            frames += len(binner.push(part))
        return events, frames + len(binner.flush())

    return one


def whole(path: Path) -> tuple[int, int]:
    events = read_nmnist(path)
    return len(events), len(ToFrames(sensor_size=(34, 34), n_frames=8)(events))


def run(args: argparse.Namespace) -> dict[str, Any]:
    files = sorted(args.root.rglob("*.bin"))
    if not files:
        raise SystemExit(f"no .bin files under {args.root}")
    rounds = args.rounds
    if args.quick:
        files, rounds = files[:10], 2
    torch.set_num_threads(1)
    load_start = loadavg()
    variants: dict[str, Callable[[Path], tuple[int, int]]] = {
        f"stream, {c} events per chunk": streamed(c) for c in args.chunks
    }
    variants["whole file (read_nmnist + ToFrames)"] = whole
    replay_equal = True
    for f in files:  # warm-up and the check
        events = read_nmnist(f)
        replay = EventBinner.for_sample("nmnist", {}, int(events["t"][0]), int(events["t"][-1]))
        got = replay.frames(iter_nmnist(f, chunk_events=min(args.chunks)))
        replay_equal &= bool(np.array_equal(got, ToFrames(sensor_size=(34, 34), n_frames=8)(events)))
        for one in variants.values():
            one(f)
    per_round: list[dict[str, dict[str, float]]] = []
    names = list(variants)
    for r in range(rounds):
        timing = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            n_events = n_frames = 0
            for f in files:
                e, k = variants[name](f)
                n_events += e
                n_frames += k
            seconds = time.perf_counter() - start
            timing[name] = {
                "seconds": seconds,
                "events": n_events,
                "frames": n_frames,
                "events_per_s": n_events / seconds,
            }
        per_round.append(timing)

    def stats(name: str) -> dict[str, Any]:
        rates = [t[name]["events_per_s"] for t in per_round]
        return {
            "median_events_per_s": statistics.median(rates),
            "min_events_per_s": min(rates),
            "max_events_per_s": max(rates),
            "median_seconds": statistics.median(t[name]["seconds"] for t in per_round),
            "events": per_round[0][name]["events"],
            "frames": per_round[0][name]["frames"],
        }

    return {
        "benchmark": "stream_binning",
        "files": len(files),
        "rounds": rounds,
        "window_us": str(EventBinner.for_dataset("nmnist").window_us),
        "replay_equals_dataset_frames": replay_equal,
        "variants": {name: stats(name) for name in names},
        "per_round": per_round,
        "numpy": version("numpy"),
        "machine": machine(load_start, malloc_tuned=False),
    }


def markdown(result: dict[str, Any]) -> str:
    first = next(iter(result["variants"].values()))
    lines = [
        f"Streaming N-MNIST decode + binning, one thread: {result['files']} files, {first['events'] / 1e6:.3f} M "
        f"events per pass, {result['rounds']} rotating rounds, medians (load average "
        f"{result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']}); window "
        f"{result['window_us']} us; replay equals the dataset frames: {result['replay_equals_dataset_frames']}",
        "",
        "| variant | time per pass | events/s (median) | min-max | frames |",
        "|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['median_seconds'] * 1e3:.0f} ms | {v['median_events_per_s'] / 1e6:.2f} M "
            f"| {v['min_events_per_s'] / 1e6:.2f}-{v['max_events_per_s'] / 1e6:.2f} M | {v['frames']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or any(c < 1 for c in args.chunks):
        raise SystemExit("--rounds and --chunks must be >= 1")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if result["replay_equals_dataset_frames"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
