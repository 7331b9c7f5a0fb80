"""Rewiring overhead of RigL and SET at update_every=100 on the MNIST convnet (target: < 2 % of training time).

Reproduce (from the repository root, inside the project's virtualenv)::

    python bench/rewiring_overhead.py                      # 5 rounds x 200 steps per variant, batch 128, 2 threads
    python bench/rewiring_overhead.py --json rewiring.json # the same, and write the JSON to a file too
    python bench/rewiring_overhead.py --quick              # smoke test: 2 rounds x 2 steps, update_every 1, batch 16

What is trained
    ``build_model("convnet")`` (``Conv3x3(1->32) - BN - LIF - MaxPool2 - Conv3x3(32->64) - BN - LIF - MaxPool2 -
    FC(3136->10)``, the network of bench/throughput.py and ../shared/PERF-NOTES.md, neuron backend "auto") on a
    fixed random MNIST-shaped batch ``[T=4, B=128, 1, 28, 28]`` (direct encoding: the same image at every step;
    fixed random labels), cross-entropy on the time-mean of the output, Adam (lr 1e-3). One step is ``zero_grad``,
    forward, backward, ``optimizer.step()`` and, for the sparse variants, ``learner.step()``.

Variants (every one built from the same seed, so all start from the same dense initialisation)
    1. ``dense``: no learner, no masks, no hooks.
    2. ``static``: ``METHODS["static"]`` at density 0.1 (ERK): masks, the gradient-masking tensor hook and the
       optimiser step post-hook, but no rewiring. Its overhead over ``dense`` is the cost of the hooks alone.
    3. ``rigl``: ``METHODS["rigl"]`` at density 0.1, ``update_every=100``: magnitude pruning and gradient growth.
       The dense gradient is captured (a ``clone`` in the tensor hook) only in the backward pass of the steps that
       rewire, when the learner arms ``masks.capture``; that copy is part of the step, so it is in the window time.
    4. ``set``: ``METHODS["set"]`` at density 0.1, ``update_unit="steps"``, ``update_every=100``: SET's pruning
       (smallest positive and largest negative weights) and random growth.
    Each method keeps its own default layer selection and density distribution (at the time of writing: static
    ERK over every Conv/Linear, RigL ERK with the first layer dense, SET ER, which leaves the 288-weight first conv
    dense); the JSON records the per-layer densities. The sparse learners get ``total_steps`` = 1,000,000, so
    rewiring never stops during the benchmark (``stop_at`` is 75 % of that) and RigL's cosine drop fraction stays at
    its largest, ``alpha_0 = 0.3``: the most work per rewire. Masked convs cost the same as dense ones on this CPU
    (PERF-NOTES.md), so the sparse variants differ from ``dense`` only by the hooks and the rewiring.

Method
    All variants live in one process and are timed round-robin: each round trains every variant for a window of
    ``--steps`` (200) consecutive steps (the order rotates by one variant per round), timed with
    ``time.perf_counter`` around the whole window. Any ``--steps`` consecutive steps contain exactly
    ``steps / update_every`` = 2 rewiring updates per sparse variant; the JSON records how many each window held.
    Inside the same loop, each ``learner.step()`` call is timed on its own, which gives the time spent in the
    learner (the rewiring itself, plus the learner's bookkeeping on the other steps). Before timing, every variant
    runs ``--warmup`` untimed steps (the first one compiles the LIF kernels).
    Per round, two overhead ratios per variant:
    ``overhead_vs_dense = (window - dense window) / dense window`` (hooks + capture + rewiring, end to end) and
    ``learner_step_fraction = learner.step time / window`` (the rewiring alone, measured directly). The first is a
    difference of two ~30 s windows and carries the machine's noise (absolute speeds swing by +-30 % between runs
    on a shared 2-core machine); the second is a direct measurement. Their medians and ranges over rounds are
    reported, and ``rigl - static`` / ``set - static`` (over dense) isolate the rewiring from the hooks.

A single rewire in isolation
    After the rounds, ``learner.rewire(alpha=0.3, at=...)`` of the trained RigL and SET learners is timed
    ``--rewire-repeats`` times each (alternating RigL and SET), each call on its own. RigL's gradient growth needs
    dense gradients: one forward + backward with ``masks.capture`` armed fills them first (not timed), as on an
    update step. The median is given in ms and as a fraction of one training step (the median dense step of the
    rounds), and amortised over ``update_every`` steps.

Allocator
    Like the ``sparsesnn`` command line, the benchmark first calls :func:`sparsesnn.train.runtime.tune_allocator`
    (``SPARSESNN_TUNE_MALLOC=0`` turns it off; the JSON records whether it was applied).

Output: a JSON object on stdout (and in ``--json PATH``), then a Markdown summary.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchutil import fmt_range as _fmt_range
from benchutil import loadavg as _loadavg
from benchutil import machine as _machine
from benchutil import run_and_report
from benchutil import short_path as _short_path
from benchutil import summary as _summary
from benchutil import unique_graphs as _unique_graphs
from benchutil import version as _version
from torch import nn

try:
    import sparsesnn
except ImportError:  # not installed: running from a bare checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import sparsesnn

from sparsesnn.models import build_model
from sparsesnn.neuron.kernels.op import _compiler_available
from sparsesnn.sparse import METHODS, StructureLearner
from sparsesnn.sparse.rewiring import RewiringLearner

VARIANTS: tuple[str, ...] = ("dense", "static", "rigl", "set")
SPARSE_VARIANTS: tuple[str, ...] = ("static", "rigl", "set")
REWIRING_VARIANTS: tuple[str, ...] = ("rigl", "set")
NUM_CLASSES = 10
INPUT_SIZE = 28
TOTAL_STEPS = 1_000_000  # the learners' training budget: rewiring never stops within the benchmark
REWIRE_ALPHA = 0.3
TARGET = 0.02


# ----------------------------------------------------------------------------------------------------------------------
# the variants
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    learner: StructureLearner | None = None
    info: dict[str, Any] = field(default_factory=dict)
    first_step_s: float = float("nan")
    window_s: list[float] = field(default_factory=list)
    learner_s: list[float] = field(default_factory=list)
    rewires: list[int] = field(default_factory=list)
    rewire_step_s: list[float] = field(default_factory=list)  # learner.step() calls that rewired
    other_step_s: list[float] = field(default_factory=list)  # learner.step() calls that did not
    isolated_rewire_s: list[float] = field(default_factory=list)
    last_loss: float = float("nan")


def make_variant(name: str, lr: float, density: float, update_every: int, seed: int) -> Variant:
    model = build_model("convnet")
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    common: dict[str, Any] = dict(density=density, total_steps=TOTAL_STEPS, seed=seed)
    learner: StructureLearner | None
    if name == "dense":
        learner = None
    elif name == "static":
        learner = METHODS["static"](model, optimizer, **common)
    elif name == "rigl":
        learner = METHODS["rigl"](model, optimizer, update_every=update_every, **common)
    elif name == "set":
        learner = METHODS["set"](model, optimizer, update_unit="steps", update_every=update_every, **common)
    else:
        raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    info: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if learner is not None:
        info["density"] = learner.density()
        info["layer_density"] = learner.metrics()["layer_density"]
    return Variant(name, model, optimizer, learner, info)


def _history_len(learner: StructureLearner | None) -> int:
    return len(learner.history) if isinstance(learner, RewiringLearner) else 0


def train_step(v: Variant, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """One training step; returns the loss, the seconds spent in ``learner.step()`` and whether it rewired."""
    v.optimizer.zero_grad(set_to_none=True)
    out = v.model(x)
    loss = F.cross_entropy(out.mean(0), y)
    loss.backward()
    v.optimizer.step()
    if v.learner is None:
        return loss.detach(), 0.0, False
    before = _history_len(v.learner)
    t0 = time.perf_counter()
    v.learner.step()
    elapsed = time.perf_counter() - t0
    return loss.detach(), elapsed, _history_len(v.learner) > before


def run_window(v: Variant, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    learner_total = 0.0
    rewires = 0
    loss = torch.zeros(())
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, learner_s, rewired = train_step(v, x, y)
        learner_total += learner_s
        if v.learner is not None:
            (v.rewire_step_s if rewired else v.other_step_s).append(learner_s)
            rewires += rewired
    v.window_s.append(time.perf_counter() - t0)
    v.learner_s.append(learner_total)
    v.rewires.append(rewires)
    v.last_loss = float(loss)


# ----------------------------------------------------------------------------------------------------------------------
# a single rewire in isolation
# ----------------------------------------------------------------------------------------------------------------------
def prepare_isolated_rewire(v: Variant, x: torch.Tensor, y: torch.Tensor) -> None:
    """Give a rewiring learner what an update step gives it: dense gradients, when its growth needs them."""
    learner = v.learner
    assert isinstance(learner, RewiringLearner) and learner.masks is not None
    if learner.grow_name != "gradient":
        return
    learner._dense_grads.clear()  # filled by the gradient hook while capture is armed
    learner.masks.capture = True
    v.optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(v.model(x).mean(0), y).backward()
    learner.masks.capture = False
    v.optimizer.zero_grad(set_to_none=True)
    if not learner._dense_grads:
        raise RuntimeError(f"{v.name}: no dense gradient was captured")


def time_isolated_rewires(variants: list[Variant], repeats: int) -> None:
    for i in range(repeats):
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        for v in order:
            learner = v.learner
            assert isinstance(learner, RewiringLearner)
            t0 = time.perf_counter()
            learner.rewire(REWIRE_ALPHA, at=learner.steps)
            v.isolated_rewire_s.append(time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------------------------
# reporting helpers (as in bench/throughput.py)
# ----------------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 5; --quick: 2)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window (default 200; quick: 2)")
    p.add_argument("--update-every", type=int, default=None, help="rewiring period in steps (default 100; quick: 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant first (default 3; quick: 1)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; quick: 16)")
    p.add_argument("--rewire-repeats", type=int, default=None, help="isolated rewires each (default 20; quick: 3)")
    p.add_argument("--density", type=float, default=0.1, help="density of the sparse variants (default 0.1)")
    p.add_argument("--time-steps", type=int, default=4, help="T (default 4)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds x 2 steps, update_every 1, batch 16")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    defaults = (
        {"rounds": 2, "steps": 2, "update_every": 1, "warmup": 1, "batch": 16, "rewire_repeats": 3}
        if args.quick
        else {"rounds": 5, "steps": 200, "update_every": 100, "warmup": 3, "batch": 128, "rewire_repeats": 20}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("rounds", "steps", "update_every", "batch", "rewire_repeats", "time_steps", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if not 0.0 < args.density < 1.0:
        p.error("--density must be in (0, 1)")
    return args


def run(args: argparse.Namespace, malloc_tuned: bool = False) -> dict[str, Any]:
    load_start = _loadavg()
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.batch, 1, INPUT_SIZE, INPUT_SIZE, generator=gen)
    x = images.unsqueeze(0).expand(args.time_steps, *images.shape).contiguous()
    y = torch.randint(0, NUM_CLASSES, (args.batch,), generator=gen)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variants = []
        for name in VARIANTS:
            torch.manual_seed(args.seed)  # same initialisation stream for every variant
            variants.append(make_variant(name, args.lr, args.density, args.update_every, args.seed))
        graphs_before_warmup = _unique_graphs()
        for v in variants:
            for i in range(args.warmup):
                t0 = time.perf_counter()
                train_step(v, x, y)
                if i == 0:
                    v.first_step_s = time.perf_counter() - t0
        graphs_after_warmup = _unique_graphs()

        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                gc.collect()
                run_window(v, x, y, args.steps)
        graphs_after_timing = _unique_graphs()

        by = {v.name: v for v in variants}
        rewiring = [by[name] for name in REWIRING_VARIANTS]
        for v in rewiring:
            prepare_isolated_rewire(v, x, y)
        gc.collect()
        time_isolated_rewires(rewiring, args.rewire_repeats)

    rounds = range(args.rounds)
    dense = by["dense"]
    dense_step_s = [w / args.steps for w in dense.window_s]
    dense_step_median = statistics.median(dense_step_s)

    def over_dense(v: Variant) -> list[float]:
        return [(v.window_s[i] - dense.window_s[i]) / dense.window_s[i] for i in rounds]

    variant_json: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = {
            "window_s": _summary(v.window_s),
            "step_ms": _summary([w / args.steps * 1e3 for w in v.window_s]),
            "samples_per_s": _summary([args.steps * args.batch / w for w in v.window_s]),
            "first_step_s": v.first_step_s,
            "final_loss": v.last_loss,
            **v.info,
        }
        if v is not dense:
            entry["overhead_vs_dense"] = _summary(over_dense(v))
        if v.learner is not None:
            entry["learner_step_ms"] = _summary([s * 1e3 for s in v.learner_s])
            entry["learner_step_fraction"] = _summary([v.learner_s[i] / v.window_s[i] for i in rounds])
            entry["rewires_per_window"] = list(v.rewires)
            rewiring_ms = [s * 1e3 for s in v.rewire_step_s]
            other_us = [s * 1e6 for s in v.other_step_s]
            entry["learner_step_ms_when_rewiring"] = _summary(rewiring_ms) if rewiring_ms else None
            entry["learner_step_us_otherwise"] = _summary(other_us) if other_us else None
            entry["density_end"] = v.learner.density()
        variant_json[v.name] = entry

    static = by["static"]
    ratios: dict[str, Any] = {}
    for v in rewiring:
        ratios[f"{v.name}_minus_static_over_dense"] = _summary(
            [(v.window_s[i] - static.window_s[i]) / dense.window_s[i] for i in rounds]
        )

    isolated: dict[str, Any] = {
        "alpha": REWIRE_ALPHA,
        "repeats": args.rewire_repeats,
        "dense_step_ms": dense_step_median * 1e3,
    }
    for v in rewiring:
        median_s = statistics.median(v.isolated_rewire_s)
        assert isinstance(v.learner, RewiringLearner)
        last = v.learner.history[-1]["layers"] if v.learner.history else {}
        isolated[v.name] = {
            "rewire_ms": _summary([s * 1e3 for s in v.isolated_rewire_s]),
            "fraction_of_one_step": median_s / dense_step_median,
            "amortised_fraction_per_step": median_s / (args.update_every * dense_step_median),
            "last_rewire_per_layer": last,
        }

    verdict = {
        "target": TARGET,
        **{
            f"{name}_learner_step_fraction_below_target": variant_json[name]["learner_step_fraction"]["median"] < TARGET
            for name in REWIRING_VARIANTS
        },
        **{
            f"{name}_overhead_vs_dense_below_target": variant_json[name]["overhead_vs_dense"]["median"] < TARGET
            for name in SPARSE_VARIANTS
        },
    }
    return {
        "benchmark": "rewiring overhead of RigL and SET during conv SNN training (fwd+bwd+Adam+learner.step), CPU",
        "config": {
            "model": "Conv(1->32,3,p1,nobias)-BN-LIF-MaxPool2-Conv(32->64)-BN-LIF-MaxPool2-FC(3136->10)",
            "neuron_backend": "auto -> " + ("compiled" if _compiler_available(torch.device("cpu")) else "eager"),
            "time_steps": args.time_steps,
            "batch": args.batch,
            "input": f"random [T,B,1,{INPUT_SIZE},{INPUT_SIZE}] (same image every step), seed {args.seed}",
            "loss": "cross_entropy(output.mean(0), labels)",
            "optimizer": f"Adam(lr={args.lr})",
            "density": args.density,
            "update_every": args.update_every,
            "total_steps": TOTAL_STEPS,
            "rounds": args.rounds,
            "steps_per_window": args.steps,
            "warmup_steps": args.warmup,
            "rewire_repeats": args.rewire_repeats,
            "quick": args.quick,
            "order": "round-robin, rotated by one variant per round",
            "variants": list(VARIANTS),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sparsesnn": getattr(sparsesnn, "__version__", None) or _version("sparsesnn"),
        },
        "machine": _machine(load_start, malloc_tuned),
        "variants": variant_json,
        "ratios": ratios,
        "isolated_rewire": isolated,
        "verdict": verdict,
        "compile": {
            "graphs_compiled_in_warmup": graphs_after_warmup - graphs_before_warmup,
            "graphs_compiled_during_timed_rounds": graphs_after_timing - graphs_after_warmup,
        },
        "warnings": sorted(
            {f"{w.category.__name__}: {w.message} ({_short_path(w.filename)}:{w.lineno})" for w in caught}
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"## Rewiring overhead, conv SNN training on CPU: T={cfg['time_steps']}, batch {cfg['batch']}, "
        f"density {cfg['density']}, update_every {cfg['update_every']}, {result['machine']['threads']} threads, "
        f"{cfg['rounds']} rounds x {cfg['steps_per_window']} steps "
        f"(load average {result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']})",
        "",
        "| variant | window s median | step ms median | overhead vs dense, median (min to max) "
        "| learner.step / window, median (min to max) | rewires per window | learner.step ms when rewiring |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        over = _fmt_range(v["overhead_vs_dense"], 2, 100.0, " %") if "overhead_vs_dense" in v else "-"
        frac = _fmt_range(v["learner_step_fraction"], 3, 100.0, " %") if "learner_step_fraction" in v else "-"
        rewires = ", ".join(map(str, v["rewires_per_window"])) if "rewires_per_window" in v else "-"
        when = v.get("learner_step_ms_when_rewiring")
        lines.append(
            f"| {name} | {v['window_s']['median']:.2f} | {v['step_ms']['median']:.1f} | {over} | {frac} "
            f"| {rewires} | {_fmt_range(when, 2) if when else '-'} |"
        )
    iso = result["isolated_rewire"]
    lines += [
        "",
        "Per-round ratios, median (min to max) over rounds:",
        *(
            f"- ({name} - static) / dense window time: {_fmt_range(r, 2, 100.0, ' %')}"
            for name, r in ((k.split("_", 1)[0], v) for k, v in result["ratios"].items())
        ),
        "",
        f"## One rewire in isolation (alpha {iso['alpha']}, {iso['repeats']} repeats each; "
        f"one dense training step = {iso['dense_step_ms']:.1f} ms)",
        "",
        "| learner | rewire ms median (min to max) | fraction of one step | amortised over update_every steps |",
        "|---|---|---|---|",
    ]
    for name in REWIRING_VARIANTS:
        r = iso[name]
        lines.append(
            f"| {name} | {_fmt_range(r['rewire_ms'], 2)} | {r['fraction_of_one_step'] * 100:.2f} % "
            f"| {r['amortised_fraction_per_step'] * 100:.4f} % |"
        )
    verdict = result["verdict"]
    checks = (f"{k.removesuffix('_below_target')}: {'yes' if v else 'no'}" for k, v in verdict.items() if k != "target")
    lines += [
        "",
        f"Target < {verdict['target'] * 100:.0f} % (medians): " + "; ".join(checks) + ".",
        f"Graphs compiled in warm-up {result['compile']['graphs_compiled_in_warmup']}, during timed rounds "
        f"{result['compile']['graphs_compiled_during_timed_rounds']}.",
    ]
    if result["warnings"]:
        lines += ["", "Warnings: " + "; ".join(result["warnings"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_and_report(args, run, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
