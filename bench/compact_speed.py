"""CPU inference speed of the compacted convnet against the dense model, at 50 % and 10 % of the neurons kept.

Reproduce (from the repository root, inside the project's virtualenv)::

    python bench/compact_speed.py                        # 10 rounds x 5 batches per variant, batch 128, 2 threads
    python bench/compact_speed.py --json compact.json    # the same, and write the JSON to a file too
    python bench/compact_speed.py --keep 0.5 0.25 0.1    # other fractions of neurons kept
    python bench/compact_speed.py --quick                # smoke test: 2 rounds x 1 batch, batch 8

What is timed
    Inference (``model.eval()``, ``torch.no_grad()``) of ``build_model("convnet", channels=(32, 64), hidden=512)``:
    ``Conv3x3(1->32) - BN - LIF - MaxPool2 - Conv3x3(32->64) - BN - LIF - MaxPool2 - FC(3136->512) - LIF -
    FC(512->10)`` (neuron backend "auto": the fused LIF compiled when a C++ compiler is present), on a fixed random
    MNIST-shaped batch ``[T=4, B=128, 1, 28, 28]`` (direct encoding: the same image at every step).

Variants, for every fraction ``k`` of ``--keep`` (default 0.5 and 0.1)
    - ``dense``: the model as built (one copy for all fractions).
    - ``masked-<k>``: a copy in which a random ``k`` of the output neurons (channels / units) of every Conv/Linear
      except the last is kept, the rest pruned through a static learner
      (``METHODS["static"](model, None, density=1.0)``, then ``learner.masks.set_neuron_mask(layer, alive)`` for
      each layer but the last), then ``learner.finalize()``: the pruned neurons' weights, bias and BN ``gamma`` /
      ``beta`` are zero, but the tensors keep their dense shapes, so it costs what ``dense`` costs.
    - ``compact-<k>``: ``sparsesnn.sparse.shrink.compact(masked, example)``: the dead neurons, their BN entries and
      the matching fan-in of the next layer physically removed. Its outputs must match ``masked-<k>``'s: the maximum
      absolute difference, on the timed batch and on a second random batch, is asserted to be <= 1e-6.
    The number kept per layer is ``max(1, round(k * n))`` (at 10 %: 3 of 32, 6 of 64 and 51 of 512).

Activity
    Freshly initialised and in eval mode (BN running mean 0, variance 1) the network is silent: no LIF layer fires
    and the output is the last layer's bias, which would make the output comparison vacuous. So before the copies
    are made, the BN running statistics are set to those of the timed batch (one train-mode pass) and the hidden FC,
    which has no BN, is rescaled to unit output std on it; every LIF layer then fires at a few per cent (the JSON
    records the rates). Pruning silences much of what follows (at 10 % kept, the hidden layer would never fire), so
    each masked copy is re-activated the same way after ``finalize()``, as training would have adapted it; dead
    units stay dead (zero weights, bias, ``gamma`` and ``beta``). Speed does not depend on any of this: every kernel
    is dense.

Method
    All variants live in one process and are timed round-robin: each round runs ``--batches`` forward passes of
    every variant (the order rotates by one variant per round), timed with ``time.perf_counter`` around the whole
    block. Before timing, every variant runs ``--warmup`` untimed batches. The LIF kernels are compiled for each
    variant's shapes by the first pass through it, mostly inside ``compact``'s own verification runs; the JSON
    records the graphs compiled before, in and after the warm-up (during the timed rounds it should be 0).
    Absolute speeds on a shared 2-core machine swing by +-30 % between runs (../shared/PERF-NOTES.md), so the
    headline numbers are per-round ratios ``compact-<k> / dense`` (and ``masked-<k> / dense``, expected near 1) in
    samples per second, whose median and min/max over rounds are reported, with the parameter counts.

Allocator
    Like the ``sparsesnn`` command line, the benchmark first calls :func:`sparsesnn.train.runtime.tune_allocator`
    (``SPARSESNN_TUNE_MALLOC=0`` turns it off; the JSON records whether it was applied).

Output: a JSON object on stdout (and in ``--json PATH``), then a Markdown summary.
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
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
from sparsesnn.neuron.spiking import is_spiking
from sparsesnn.sparse import METHODS
from sparsesnn.sparse.masks import following_norm, prunable_layers
from sparsesnn.sparse.shrink import compact

CHANNELS = (32, 64)
HIDDEN = 512
INPUT_SIZE = 28
MAX_ABS_DIFF = 1e-6


# ----------------------------------------------------------------------------------------------------------------------
# the models
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    first_batch_s: float = float("nan")
    batch_s: list[float] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)


def _tag(keep: float) -> str:
    return f"{keep * 100:g}"


def build_dense(seed: int, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("convnet", channels=CHANNELS, hidden=HIDDEN)
    activate(model, x)
    return model


@torch.no_grad()
def activate(model: nn.Module, x: torch.Tensor) -> None:
    """Make a freshly initialised model fire on ``x`` the way a trained one does; in place, leaves it in eval mode.

    Fresh, in eval mode (BN running mean 0 and variance 1), the convnet is silent: no LIF layer fires, the output is
    the last layer's bias, and comparing the masked and compacted outputs would prove nothing. So BN running
    statistics are set to those of ``x`` (one train-mode pass with cumulative averaging), and every Conv/Linear but
    the last that feeds a neuron without a BN in between (the hidden FC) is rescaled to unit output std on ``x``
    (over its live units). Dead units stay dead: their weights, bias and BN ``gamma`` / ``beta`` remain 0.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    model.train()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model(x)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    model.eval()
    for name, module in prunable_layers(model)[:-1]:
        if following_norm(model, name) is not None:
            continue
        outputs: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out, store=outputs: store.append(out))
        model(x)
        handle.remove()
        out = outputs[0].reshape(-1, outputs[0].shape[-1])
        std = float(out[:, out.abs().sum(0) > 0].std())  # over the live units only
        module.weight.div_(std)
        if isinstance(module.bias, torch.Tensor):
            module.bias.div_(std)


@torch.no_grad()
def firing_rates(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Mean spike rate of every spiking layer on ``x`` (pruned neurons count as silent)."""
    rates: dict[str, float] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: rates.__setitem__(name, float(out.float().mean())))
        for name, module in model.named_modules()
        if is_spiking(module)
    ]
    model(x)
    for handle in handles:
        handle.remove()
    return rates


def prune_neurons(
    dense: nn.Module, keep: float, generator: torch.Generator, x: torch.Tensor
) -> tuple[nn.Module, dict[str, list[int]]]:
    """A copy of ``dense`` with a random ``keep`` fraction of the neurons of every layer but the last kept.

    The masks are baked in (``learner.finalize()``), then the copy is re-activated on ``x`` (:func:`activate`).
    """
    model = copy.deepcopy(dense)
    learner = METHODS["static"](model, None, density=1.0)
    assert learner.masks is not None
    kept: dict[str, list[int]] = {}
    for layer in learner.layers[:-1]:  # the last layer's outputs are the model's outputs
        n = layer.neuron_mask.numel()
        n_keep = max(1, round(keep * n))
        alive = torch.zeros(n, dtype=torch.bool)
        alive[torch.randperm(n, generator=generator)[:n_keep]] = True
        learner.masks.set_neuron_mask(layer, alive.to(layer.neuron_mask.device))
        kept[layer.name] = [n_keep, n]
    model = learner.finalize()
    activate(model, x)  # a pruned network, trained, would fire too
    return model, kept


def _parameters(model: nn.Module) -> dict[str, int]:
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "nonzero_parameters": sum(int(torch.count_nonzero(p)) for p in model.parameters()),
    }


def _layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(module.weight.shape) for name, module in prunable_layers(model)}


@torch.no_grad()
def _max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((a(x) - b(x)).abs().max())


@torch.no_grad()
def infer(v: Variant, x: torch.Tensor) -> torch.Tensor:
    return v.model(x)


# ----------------------------------------------------------------------------------------------------------------------
# reporting helpers (as in bench/throughput.py)
# ----------------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 10; --quick: 2)")
    p.add_argument("--batches", type=int, default=None, help="timed batches per variant, round (default 5; quick: 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches per variant first (default 2; quick: 1)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; quick: 8)")
    p.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.1], help="fractions of neurons kept (0.5 0.1)")
    p.add_argument("--time-steps", type=int, default=4, help="T (default 4)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds x 1 batch, 1 warmup, batch 8")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    defaults = (
        {"rounds": 2, "batches": 1, "warmup": 1, "batch": 8}
        if args.quick
        else {"rounds": 10, "batches": 5, "warmup": 2, "batch": 128}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("rounds", "batches", "batch", "time_steps", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if not all(0.0 < k < 1.0 for k in args.keep) or len(set(args.keep)) != len(args.keep):
        p.error("--keep takes distinct fractions in (0, 1)")
    return args


def run(args: argparse.Namespace, malloc_tuned: bool = False) -> dict[str, Any]:
    load_start = _loadavg()
    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 1, INPUT_SIZE, INPUT_SIZE)
    images = torch.rand(*shape, generator=gen)
    x = images.unsqueeze(0).expand(args.time_steps, *shape).contiguous()
    other = torch.rand(*shape, generator=gen).unsqueeze(0).expand(args.time_steps, *shape).contiguous()
    prune_gen = torch.Generator().manual_seed(args.seed + 1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphs_at_start = _unique_graphs()
        dense = build_dense(args.seed, x)
        variants = [Variant("dense", dense, {**_parameters(dense), "layers": _layer_shapes(dense)})]
        compaction: dict[str, Any] = {}
        for keep in args.keep:
            tag = _tag(keep)
            masked, kept = prune_neurons(dense, keep, prune_gen, x)
            small, report = compact(masked, x)
            diff_timed = _max_abs_diff(masked, small, x)
            diff_other = _max_abs_diff(masked, small, other)
            compaction[tag] = {
                "keep": keep,
                "neurons_kept": kept,
                "report": report.as_dict(),
                "max_abs_diff_timed_batch": diff_timed,
                "max_abs_diff_other_batch": diff_other,
                "firing_rates_masked": firing_rates(masked, x),
                "firing_rates_compact": firing_rates(small, x),
            }
            if report.kept:
                raise RuntimeError(f"compact() kept layers at keep={keep}: {report.kept}")
            for where, diff in (("timed", diff_timed), ("other", diff_other)):
                if not diff <= MAX_ABS_DIFF:
                    raise AssertionError(f"keep={keep}: compacted output differs by {diff:.3g} on the {where} batch")
            variants.append(Variant(f"masked-{tag}", masked, _parameters(masked)))
            variants.append(Variant(f"compact-{tag}", small, {**_parameters(small), "layers": _layer_shapes(small)}))
        dense_rates = firing_rates(dense, x)

        graphs_before_warmup = _unique_graphs()
        for v in variants:
            for i in range(args.warmup):
                t0 = time.perf_counter()
                infer(v, x)
                if i == 0:
                    v.first_batch_s = time.perf_counter() - t0
        graphs_after_warmup = _unique_graphs()

        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                gc.collect()
                t0 = time.perf_counter()
                for _ in range(args.batches):
                    infer(v, x)
                elapsed = time.perf_counter() - t0
                v.batch_s.append(elapsed / args.batches)
                v.samples_per_s.append(args.batches * args.batch / elapsed)
        graphs_after_timing = _unique_graphs()

    by = {v.name: v for v in variants}
    rounds = range(args.rounds)
    base = by["dense"]
    ratios: dict[str, Any] = {}
    for keep in args.keep:
        for kind in ("compact", "masked"):
            name = f"{kind}-{_tag(keep)}"
            ratios[f"{name}_over_dense_samples_per_s"] = _summary(
                [by[name].samples_per_s[i] / base.samples_per_s[i] for i in rounds]
            )
    variant_json: dict[str, Any] = {}
    for v in variants:
        variant_json[v.name] = {
            "samples_per_s": _summary(v.samples_per_s),
            "batch_ms": _summary([s * 1e3 for s in v.batch_s]),
            "over_dense_samples_per_s": _summary([v.samples_per_s[i] / base.samples_per_s[i] for i in rounds]),
            "first_batch_s": v.first_batch_s,
            **v.info,
        }
    return {
        "benchmark": "compacted convnet: CPU inference speed against the dense model",
        "config": {
            "model": f"Conv(1->{CHANNELS[0]},3,p1,nobias)-BN-LIF-MaxPool2-Conv({CHANNELS[0]}->{CHANNELS[1]})-BN-LIF-"
            f"MaxPool2-FC({CHANNELS[1] * (INPUT_SIZE // 4) ** 2}->{HIDDEN})-LIF-FC({HIDDEN}->10)",
            "neuron_backend": "auto -> " + ("compiled" if _compiler_available(torch.device("cpu")) else "eager"),
            "mode": "eval, torch.no_grad",
            "time_steps": args.time_steps,
            "batch": args.batch,
            "input": f"random [T,B,1,{INPUT_SIZE},{INPUT_SIZE}] (same image every step), seed {args.seed}",
            "keep": list(args.keep),
            "pruning": "random neurons of every Conv/Linear but the last, via a static learner's neuron masks",
            "rounds": args.rounds,
            "batches_per_round": args.batches,
            "warmup_batches": args.warmup,
            "quick": args.quick,
            "order": "round-robin, rotated by one variant per round",
            "variants": [v.name for v in variants],
            "max_abs_diff_allowed": MAX_ABS_DIFF,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sparsesnn": getattr(sparsesnn, "__version__", None) or _version("sparsesnn"),
        },
        "machine": _machine(load_start, malloc_tuned),
        "variants": variant_json,
        "ratios": ratios,
        "compaction": compaction,
        "firing_rates_dense": dense_rates,
        "compile": {
            "graphs_compiled_before_warmup": graphs_before_warmup - graphs_at_start,
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
        f"## Compacted convnet, CPU inference: T={cfg['time_steps']}, batch {cfg['batch']}, "
        f"{result['machine']['threads']} threads, {cfg['rounds']} rounds x {cfg['batches_per_round']} batches "
        f"(load average {result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']})",
        "",
        "| variant | parameters | nonzero | samples/s median (min-max) | batch ms median "
        "| ÷ dense samples/s, median (min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['parameters']:,} | {v['nonzero_parameters']:,} | {_fmt_range(v['samples_per_s'], 0)} "
            f"| {v['batch_ms']['median']:.1f} | {_fmt_range(v['over_dense_samples_per_s'])} |"
        )
    lines += ["", "Per-round speed-up of the compacted model, median (min-max) over rounds:"]
    for keep in cfg["keep"]:
        tag = _tag(keep)
        c = result["compaction"][tag]
        kept = ", ".join(f"{n} {a}/{b}" for n, (a, b) in c["neurons_kept"].items())
        lines.append(
            f"- {tag} % of neurons kept ({kept}): compact / dense "
            f"{_fmt_range(result['ratios'][f'compact-{tag}_over_dense_samples_per_s'])}, masked / dense "
            f"{_fmt_range(result['ratios'][f'masked-{tag}_over_dense_samples_per_s'])}; "
            f"max |masked - compact| {c['max_abs_diff_timed_batch']:.2g} (timed batch), "
            f"{c['max_abs_diff_other_batch']:.2g} (another batch)"
        )
    lines += [
        "",
        f"Graphs compiled before the warm-up (mostly in compact's checks) "
        f"{result['compile']['graphs_compiled_before_warmup']}, in warm-up "
        f"{result['compile']['graphs_compiled_in_warmup']}, during timed rounds "
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
