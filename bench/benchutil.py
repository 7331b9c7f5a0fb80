"""Helpers every benchmark script shares: summaries of per-round values, machine facts, compile counters.

The scripts run as ``python bench/NAME.py`` (this folder is then first on ``sys.path``) and are loaded by file path
in the tests, which put this folder on ``sys.path`` first.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and every per-round value."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": list(values)}


def per_sample_ms(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Time of ``model`` over ``inputs`` (time-major batches ``[T, B, ...]``), in ms per sample."""
    t0 = time.perf_counter()
    for x in inputs:
        model(x)
    return (time.perf_counter() - t0) * 1e3 / sum(int(x.shape[1]) for x in inputs)


def round_robin_per_sample(
    models: dict[str, torch.nn.Module], inputs: Sequence[torch.Tensor], rounds: int
) -> dict[str, list[float]]:
    """Each model warmed up on the first two inputs, then timed over all of them once per round, one model after
    the other (``rounds`` rounds): ms per sample, per model and round."""
    for m in models.values():
        per_sample_ms(m, inputs[:2])
    ms: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, m in models.items():
            ms[key].append(per_sample_ms(m, inputs))
    return ms


def dynamo_counters() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    return {k: dict(v) for k, v in counters.items() if v}


def unique_graphs() -> int:
    """How many graphs torch.compile has built in this process."""
    return int(dynamo_counters().get("stats", {}).get("unique_graphs", 0))


def short_path(filename: str) -> str:
    parts = Path(filename).parts
    return "/".join(parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-3:])


def cpu_model() -> str:
    """``platform.processor()`` is empty on many Linux systems; fall back to /proc/cpuinfo's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(load_start: list[float] | None, malloc_tuned: bool) -> dict[str, Any]:
    """What ran the benchmark: CPU, threads, load before and after, allocator settings."""
    env_keys = ("LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SPARSESNN_NO_COMPILE", "SPARSESNN_TUNE_MALLOC")
    return {
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "malloc_tuned": malloc_tuned,
        "env": {k: os.environ[k] for k in env_keys if k in os.environ}
        | {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }


def fmt_range(s: dict[str, Any], digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """``median (min-max)`` of a :func:`summary`."""
    return (
        f"{s['median'] * scale:.{digits}f}{unit} "
        f"({s['min'] * scale:.{digits}f}{unit}-{s['max'] * scale:.{digits}f}{unit})"
    )


def run_and_report(args: Any, run: Any, markdown: Any) -> dict[str, Any]:
    """The common ``main``: tune the allocator, set ``args.threads``, run with the RNG state restored afterwards,
    print the JSON and the Markdown, and write ``args.json`` when given."""
    from sparsesnn.train.runtime import tune_allocator

    malloc_tuned = tune_allocator()  # process-wide, as in the sparsesnn CLI
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            result = run(args, malloc_tuned)
    finally:
        torch.set_num_threads(previous_threads)
    emit(result, markdown(result), args.json)
    return result


def emit(result: dict[str, Any], markdown_text: str, json_path: Path | None) -> None:
    """Print the JSON, a blank line and the Markdown; write the JSON to ``json_path`` too when given."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(markdown_text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
