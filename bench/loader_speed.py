"""Input pipeline speed, loader only: how fast augmented CIFAR-10 batches and cached event frames are delivered,
against the GPU step that consumes them.

Reproduce (from the repository root, inside the project's virtualenv)::

    python bench/loader_speed.py                     # 5 round-robin rounds; a 50,000-image CIFAR pickle
    python bench/loader_speed.py --json loader.json  # the same, and write the JSON to a file too
    python bench/loader_speed.py --quick             # smoke test: 2 rounds, small data sets

What is delivered (``sparsesnn.train.batching.iterate_batches``, the engine's loader, batch 64)
    * ``cifar10``: the real CIFAR loader (``build_dataset("cifar10", ..., augment=True)``: pickles -> float32,
      normalised per channel) over a synthesised CIFAR-10 python pickle of ``--cifar-train`` random images
      (``sparsesnn.data.images.write_cifar10``; there is no CIFAR-10 on disk), with the CIFAR recipes' augmentation:
      random crop 32 from the image padded by 4, horizontal flip with probability 1/2, per batch.
    * ``nmnist``: the N-MNIST subset of ../shared/data (1,000 training recordings) through the real
      ``nmnist`` dataset at T = 10 frames of 2x34x34 with its on-disk frame cache (warmed before timing) and the
      N-MNIST recipe's augmentation (random translation by up to 2 px).
    * ``dvs48``: DVS-Gesture-like samples for VGGSNN's 2x48x48 input: windows of the ten DVS128 Gesture clips of
      ../shared/data/dvs_gesture/slayer_bs2_1450ms (1,000 ms windows at ``--dvs-windows`` start offsets per clip)
      through the same ``EventFrameDataset`` class, area-pooled 128 -> 48 at T = 10, cached (warm), augmented as
      the CIFAR10-DVS / VGGSNN recipe (random translation by up to 4 px, horizontal flip).

Loaders
    ``--workers`` (default 0, 1, 2) worker processes (``data.num_workers``); for the in-memory CIFAR set also
    ``0+thread``: the main process with the background read-ahead thread the engine uses off the CPU. Pinned
    memory (``data.pin_memory``) only means something with CUDA: there each loader is run with pinning off and on
    and every batch is copied to the GPU with ``non_blocking=True`` (synchronised at the end of a measurement);
    without CUDA the pinned variants are skipped, and the JSON says so.

Method
    One measurement starts a fresh iterator (as an epoch does: worker processes start, nothing is read ahead yet)
    and takes ``--batches`` batches. ``startup_ms`` is the time to the first batch; ``ms_per_batch`` the time from
    the first to the last batch over the batches in between (the steady state a long epoch sees);
    ``cpu_ms_per_batch`` the CPU time of the whole measurement (this process's threads and the loader's worker
    processes, user + system, startup included) per batch: the work a batch costs, which other load on the machine
    changes far less than the wall time (with N idle cores, N workers deliver at most N / CPU time), from which
    ``workers_for_2x_on_idle_cores`` estimates the workers a machine with free cores (a GPU host) needs for a batch
    in half a step. Rounds are round
    robin: each round measures every loader of a path once, the order rotating by one per round, each round on
    another shuffle of the samples; the headline numbers are medians over rounds (min-max beside them), because a
    shared 2-core machine swings by +-30 % (../shared/PERF-NOTES.md). ``step_over_batch`` = the GPU step time
    of the path (an input of the benchmark: ``--cifar-step-ms``, ``--events-step-ms``) over ``ms_per_batch``: the
    input pipeline keeps up with 2x margin when it is >= 2.
    The GPU steps (../shared/PERF-NOTES.md, H200): ResNet19 on CIFAR-10 shape, batch 64, T = 4: 17-35 ms, and
    15-21 ms in bf16 compiled, the target, so the default is 15 ms; VGGSNN on 2x48x48, batch 64, T = 10: ~50 ms.

Output: a JSON object on stdout (and in ``--json PATH``), then a Markdown summary.
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchutil import fmt_range, loadavg, machine, run_and_report, summary

from sparsesnn.data import build_dataset
from sparsesnn.data.event_transforms import Compose, RandomHorizontalFlip, RandomTranslate
from sparsesnn.data.events import DVS128_SENSOR, read_bs2
from sparsesnn.data.frames import ToFrames
from sparsesnn.data.images import write_cifar10
from sparsesnn.data.neuromorphic import EventFrameDataset, EventSample
from sparsesnn.train.batching import BatchSeed, epoch_order, iterate_batches

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = SHARED if SHARED.is_dir() else Path("/work/shared/data")
PATHS = ("cifar10", "nmnist", "dvs48")
SEED = 0x10AD


@dataclass(frozen=True)
class Loader:
    """One way of reading batches: worker processes, the read-ahead thread, pinned memory."""

    workers: int
    thread: bool = False
    pin: bool = False

    @property
    def name(self) -> str:
        return f"{self.workers}{'+thread' if self.thread else ''}{' pinned' if self.pin else ''}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}")
    p.add_argument("--workers", default="0,1,2", help="comma-separated data.num_workers values")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (>= 5 for medians worth quoting)")
    p.add_argument("--cifar-batches", type=int, default=60, help="batches per CIFAR measurement")
    p.add_argument("--event-batches", type=int, default=30, help="batches per event-frame measurement")
    p.add_argument("--cifar-train", type=int, default=50_000, help="images in the synthesised CIFAR-10 pickle")
    p.add_argument("--nmnist-samples", type=int, default=0, help="N-MNIST recordings used; 0 = all 1,000")
    p.add_argument("--dvs-windows", type=int, default=50, help="samples cut from each of the 10 DVS Gesture clips")
    p.add_argument("--cifar-step-ms", type=float, default=15.0, help="GPU step the CIFAR batches feed (ResNet19)")
    p.add_argument("--events-step-ms", type=float, default=50.0, help="GPU step the event frames feed (VGGSNN)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (nmnist/, dvs_gesture/)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, small data sets, few batches")
    p.add_argument("--json", type=Path, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    args.paths = [s for s in args.paths.split(",") if s]
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        raise SystemExit(f"--paths: unknown {unknown}; choose from {list(PATHS)}")
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.rounds, args.cifar_batches, args.event_batches, args.batch = 2, 4, 3, 16
        args.cifar_train, args.nmnist_samples, args.dvs_windows = 640, 64, 5
    if args.rounds < 1 or args.cifar_batches < 2 or args.event_batches < 2:
        raise SystemExit("need --rounds >= 1 and at least 2 batches per measurement")
    return args


# ------------------------------------------------------------------------------------------------------ data sets


def cifar_set(root: Path, n: int) -> Dataset[Any]:
    write_cifar10(root, train=n, test=10, seed=1)
    ds, _ = build_dataset("cifar10", root, "train", augment=True)
    return ds


def nmnist_set(data: Path, cache: Path, samples: int) -> Dataset[Any]:
    """The first ``samples`` N-MNIST training recordings (all when 0)."""
    ds, _ = build_dataset("nmnist", data / "nmnist", "train", n_frames=10, augment=True, cache_dir=cache)
    if samples and samples < len(ds):
        ds = torch.utils.data.Subset(ds, range(samples))
    return ds


def dvs48_set(data: Path, cache: Path, windows: int) -> EventFrameDataset:
    """``windows`` samples of 1,000 ms per 1,450 ms clip, starting at evenly spaced offsets in [0, 450) ms."""
    clips = sorted((data / "dvs_gesture" / "slayer_bs2_1450ms").glob("*.bs2"))
    if not clips:
        raise SystemExit(f"no DVS Gesture clips under {data / 'dvs_gesture' / 'slayer_bs2_1450ms'}")
    starts = [k * 450_000 // windows for k in range(windows)]
    samples = [EventSample(c, k % 11, s, s + 1_000_000) for k, c in enumerate(clips) for s in starts]
    return EventFrameDataset(
        "dvs48_bench",
        clips[0].parent,
        samples,
        partial(read_bs2, sensor_size=DVS128_SENSOR),
        ToFrames(sensor_size=DVS128_SENSOR, n_frames=10, size=48),
        Compose((RandomTranslate(4), RandomHorizontalFlip(0.5))),
        cache,
    )


def warm_cache(ds: Dataset[Any]) -> dict[str, Any]:
    """Read every sample's frames once (filling the cache), then once more from the warm cache; the counts."""
    base = ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds
    indices = list(ds.indices) if isinstance(ds, torch.utils.data.Subset) else range(len(ds))  # type: ignore[arg-type]
    assert isinstance(base, EventFrameDataset) and base.cache is not None
    start = time.perf_counter()
    for i in indices:
        base.frames(i)
    fill_s = time.perf_counter() - start
    before = dict(base.cache.stats)
    for i in indices:
        base.frames(i)
    hits = base.cache.stats["hits"] - before["hits"]
    return {"samples": len(indices), "fill_s": fill_s, "warm_hits": hits, "stats": dict(base.cache.stats)}


# ----------------------------------------------------------------------------------------------------- measuring


def measure(
    ds: Dataset[Any], loader: Loader, batch: int, batches: int, epoch: int, device: torch.device | None
) -> dict[str, float]:
    """Take ``batches`` batches from a fresh iterator; copy each to ``device`` (asynchronously) when given."""
    n, wanted = len(ds), batches * batch  # type: ignore[arg-type]
    shuffles = [epoch_order(n, SEED, epoch * 1000 + k, shuffle=True) for k in range(-(-wanted // n))]
    order = torch.cat(shuffles)[:wanted]  # a small set is gone through more than once
    seed = BatchSeed((SEED, epoch), (1,))
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    stamps = []
    it = iterate_batches(
        ds, order, batch, 0, loader.workers, seed, pin_memory=loader.pin, prefetch=2 if loader.thread else 0
    )
    for _b, _idx, x, y in it:
        if device is not None:
            x.to(device, non_blocking=True)
            y.to(device, non_blocking=True)
        stamps.append(time.perf_counter())
    if device is not None:
        torch.cuda.synchronize(device)
        stamps[-1] = time.perf_counter()
    del it  # the loader's workers have been joined: their CPU time is counted
    if len(stamps) != batches:
        raise RuntimeError(f"expected {batches} batches, got {len(stamps)}")
    return {
        "startup_ms": (stamps[0] - start) * 1e3,
        "ms_per_batch": (stamps[-1] - stamps[0]) * 1e3 / (batches - 1),
        "cpu_ms_per_batch": (_cpu_seconds() - cpu_start) * 1e3 / batches,
    }


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its ended children (loader workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def loaders_for(path: str, workers: Sequence[int], cuda: bool) -> list[Loader]:
    plain = [Loader(w) for w in workers]
    if path == "cifar10" and 0 in workers:
        plain.insert(workers.index(0) + 1, Loader(0, thread=True))
    if not cuda:
        return plain
    return [v for p in plain for v in (p, Loader(p.workers, p.thread, pin=True))]


def run_path(
    path: str, ds: Dataset[Any], args: argparse.Namespace, step_ms: float, device: torch.device | None
) -> dict[str, Any]:
    loaders = loaders_for(path, args.workers, device is not None)
    batches = args.cifar_batches if path == "cifar10" else args.event_batches
    per: dict[str, list[dict[str, float]]] = {v.name: [] for v in loaders}
    for r in range(args.rounds):
        shift = r % len(loaders)
        for v in loaders[shift:] + loaders[:shift]:
            per[v.name].append(measure(ds, v, args.batch, batches, r, device))
    variants = {}
    for v in loaders:
        rounds = per[v.name]
        ms = [m["ms_per_batch"] for m in rounds]
        variants[v.name] = {
            "workers": v.workers,
            "read_ahead_thread": v.thread,
            "pin_memory": v.pin,
            "ms_per_batch": summary(ms),
            "batches_per_s": summary([1e3 / m for m in ms]),
            "startup_ms": summary([m["startup_ms"] for m in rounds]),
            "cpu_ms_per_batch": summary([m["cpu_ms_per_batch"] for m in rounds]),
            "step_over_batch": summary([step_ms / m for m in ms]),
        }
    return {
        "samples": len(ds),  # type: ignore[arg-type]
        "batches_per_measurement": batches,
        "step_ms": step_ms,
        "variants": variants,
        "workers_for_2x_on_idle_cores": workers_for_2x(variants, step_ms),
    }


def workers_for_2x(variants: dict[str, Any], step_ms: float) -> int | None:
    """Loader workers that deliver a batch in half a step on idle cores: ``ceil(2 * CPU ms per batch / step ms)``
    from the largest worker count measured (the CPU cost per batch barely depends on the count); None without
    worker variants. An estimate for a machine with that many free cores, such as a GPU host."""
    measured = [v for v in variants.values() if v["workers"] > 0 and not v["pin_memory"]]
    if not measured:
        return None
    cpu_ms = max(measured, key=lambda v: v["workers"])["cpu_ms_per_batch"]["median"]
    return max(1, math.ceil(2 * cpu_ms / step_ms))


def run(args: argparse.Namespace, malloc_tuned: bool) -> dict[str, Any]:
    load_start = loadavg()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else None
    work = Path(tempfile.mkdtemp(prefix="loader_speed_"))
    result: dict[str, Any] = {
        "benchmark": "loader_speed",
        "config": {
            "paths": args.paths,
            "workers": args.workers,
            "batch": args.batch,
            "rounds": args.rounds,
            "cifar_batches": args.cifar_batches,
            "event_batches": args.event_batches,
            "cifar_train": args.cifar_train,
            "nmnist_samples": args.nmnist_samples,
            "dvs_windows": args.dvs_windows,
            "cifar_step_ms": args.cifar_step_ms,
            "events_step_ms": args.events_step_ms,
            "quick": args.quick,
        },
        "pin_memory": "measured (CUDA: every batch copied with non_blocking=True)"
        if cuda
        else "skipped: no CUDA device (pinning only speeds up copies to a GPU; auto pins nothing here)",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "paths": {},
    }
    try:
        builders: dict[str, Callable[[], Dataset[Any]]] = {
            "cifar10": lambda: cifar_set(work / "cifar", args.cifar_train),
            "nmnist": lambda: nmnist_set(args.data, work / "nmnist_cache", args.nmnist_samples),
            "dvs48": lambda: dvs48_set(args.data, work / "dvs48_cache", args.dvs_windows),
        }
        steps = {"cifar10": args.cifar_step_ms, "nmnist": args.events_step_ms, "dvs48": args.events_step_ms}
        for path in args.paths:
            start = time.perf_counter()
            ds = builders[path]()
            setup: dict[str, Any] = {"build_s": time.perf_counter() - start}
            if path != "cifar10":
                setup["cache"] = warm_cache(ds)
            x, _ = ds[0]
            setup["sample"] = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
            result["paths"][path] = {**setup, **run_path(path, ds, args, steps[path], device)}
            del ds
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"] = machine(load_start, malloc_tuned) | {"torch": torch.__version__}
    return result


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    m = result["machine"]
    lines = [
        f"## Input pipeline, loader only: batch {cfg['batch']}, {cfg['rounds']} round-robin rounds, medians (min-max)",
        "",
        f"{m['cpu_model'] or m['processor']}, {m['cpu_count']} CPUs, {m['threads']} torch threads in the main "
        f"process, device {result['device']}; load average {m['loadavg_start']} -> {m['loadavg_end']}. "
        f"Pinned memory: {result['pin_memory']}.",
        "",
        "| data | loader (workers) | ms per batch | batches/s | startup ms | CPU ms per batch | GPU step ms "
        "| step / batch | >= 2x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path, r in result["paths"].items():
        shape = "x".join(str(s) for s in r["sample"]["shape"])
        for name, v in r["variants"].items():
            ratio = v["step_over_batch"]
            lines.append(
                f"| {path} ({shape}) | {name} | {fmt_range(v['ms_per_batch'])} | "
                f"{v['batches_per_s']['median']:.0f} | {v['startup_ms']['median']:.0f} | "
                f"{v['cpu_ms_per_batch']['median']:.1f} | {r['step_ms']:g} | "
                f"{fmt_range(ratio, 1, unit='x')} | {'yes' if ratio['median'] >= 2 else 'no'} |"
            )
    estimate = ", ".join(f"{path} {r['workers_for_2x_on_idle_cores']}" for path, r in result["paths"].items())
    lines += ["", f"Loader workers for a batch in half a step on idle cores (2 x CPU ms / step ms, up): {estimate}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return run_and_report(args, run, markdown)


if __name__ == "__main__":
    main()
