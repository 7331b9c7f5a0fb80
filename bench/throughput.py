"""Training throughput of one conv SNN on CPU: sparsesnn against SpikingJelly, snnTorch and a ReLU floor.

Reproduce (from the repository root, inside the project's virtualenv)::

    python bench/throughput.py                       # 10 rounds x 5 steps per variant, batch 128, 2 threads
    python bench/throughput.py --json bench.json     # the same, and write the JSON to a file too
    python bench/throughput.py --quick               # smoke test: 2 rounds x 2 steps, batch 16

What is trained
    The network measured in ../shared/PERF-NOTES.md and built by ``build_model("convnet")``:
    ``Conv3x3(1->32, pad 1, bias=False) - BN - LIF - MaxPool2 - Conv3x3(32->64) - BN - LIF - MaxPool2 - FC(3136->10)``
    on time-major input ``[T=4, B=128, 1, 28, 28]`` (a fixed random MNIST-shaped batch, direct encoding: the same
    image at every step; fixed random labels), cross-entropy on the time-mean of the output, Adam (lr 1e-3). One
    step is forward + backward + optimizer step (plus ``zero_grad`` and, for SpikingJelly, ``reset_net``).

Variants
    1. ``sparsesnn``: ``build_model("convnet")`` with the default neuron backend "auto", i.e. our fused LIF whose
       forward and hand-written backward loops run under ``torch.compile`` (when a C++ compiler is present; the
       JSON records what "auto" resolved to).
    2. ``sparsesnn-eager``: the same with ``NeuronSpec(backend="eager")``: the hand-written backward without
       compile (informative).
    3. ``spikingjelly``: SpikingJelly 2.0 multi-step layers (``layer.Conv2d/BatchNorm2d/MaxPool2d/Flatten/Linear``,
       ``step_mode='m'``) and ``neuron.LIFNode(tau=2, ATan(), detach_reset=False, v_reset=0)``;
       ``functional.reset_net`` after every step. SpikingJelly 2.0 removed the ``backend=`` argument of 0.0.0.0.x:
       on CPU it always binds its "torch-reference" implementation (a registered op whose forward is a Python loop
       over T and whose backward is a hand-written loop, both eager); older versions get ``backend='torch'``.
    4. ``snntorch``: ``snntorch.Leaky(beta=0.5, spike_grad=surrogate.atan(alpha=2), reset_mechanism="zero")``
       written the usual snnTorch way: ``init_leaky()`` at the start of every forward, then a Python loop over T
       calling conv, BN, neuron, pool and FC once per time step (so the convs run T times on batch B instead of
       once on ``T*B``, and BN normalises each time step separately). The dynamics are close, not equal: our LIF
       with tau=2 and ``decay_input`` is ``H = 0.5 * V + 0.5 * X``, while Leaky is ``U = 0.5 * U + X`` (beta=0.5
       without the input scaling), and Leaky's reset is detached and applied one step late (``reset_delay``).
       Equivalent dynamics are not needed to compare speed.
    5. ``relu-floor``: ``build_model("convnet")`` with every LIF replaced by ``nn.ReLU`` (time folded into the
       batch, so this is the conv/BN/pool/FC work alone): the floor any neuron implementation adds to.

Method
    All variants live in one process and are timed round-robin: each round runs ``--steps`` steps of every variant
    (the order rotates by one variant per round so no variant always follows the same one), timed with
    ``time.perf_counter`` around the whole block. Before timing, every variant runs ``--warmup`` untimed steps;
    the first of these includes ``torch.compile``'s compile of the LIF kernels, reported separately as
    ``first_step_s`` / ``compile_s_estimate`` (first step minus the median timed step). Inductor caches compiled
    code on disk, so a second run on the same machine shows a smaller "compile" time: the JSON records the
    dynamo/inductor counters (cache hits and misses) and how many graphs were compiled during the timed rounds
    (should be 0: anything else means a recompile polluted the timings). For a truly cold compile, run with
    ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``.
    Absolute speeds on a shared 2-core machine swing by +-30 % between runs (PERF-NOTES.md), so the headline
    numbers are per-round ratios, whose median and min/max over rounds are reported:
    ``sparsesnn / spikingjelly`` and ``sparsesnn / snntorch`` samples/s, and ``sparsesnn / relu-floor`` step time.
    Ratios do not cancel every kind of noise: when other processes occupy the cores, each of the many small
    parallel regions of an eager elementwise op waits for a descheduled OpenMP thread, which slows the eager
    variants far more than the few large compiled kernels. The JSON records the load average before and after;
    run on an otherwise idle machine for numbers to quote.

The neuron alone
    LIF forward + backward on ``[4, 128, 32, 28, 28]`` float32 (the first LIF layer of the network at batch 128),
    fused (ours: compiled and eager) against ``lif_reference`` (autograd through the Python time loop). Peak RSS
    deltas are unreliable on CPU (allocator caching), so memory is reported as the bytes saved for backward,
    counted with ``torch.autograd.graph.saved_tensors_hooks`` (unique storages; the input's own storage reported
    separately), and speed as the median wall time of forward + backward over ``--neuron-repeats`` round-robin
    repeats.

Allocator
    Like the ``sparsesnn`` command line, the benchmark first calls :func:`sparsesnn.train.runtime.tune_allocator` (glibc
    keeps freed activations in the heap instead of unmapping them; see PERF-NOTES.md), for every variant alike.
    ``SPARSESNN_TUNE_MALLOC=0`` turns it off; the JSON records whether it was applied.

Output: a JSON object on stdout (and in ``--json PATH``), then a Markdown summary.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchutil import cpu_model as _cpu_model
from benchutil import dynamo_counters as _dynamo_counters
from benchutil import fmt_range as _fmt_range
from benchutil import loadavg as _loadavg
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

from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.neuron.functional import lif_multistep, lif_reference
from sparsesnn.neuron.kernels.op import _compiler_available
from sparsesnn.neuron.spiking import is_spiking

VARIANTS: tuple[str, ...] = ("sparsesnn", "sparsesnn-eager", "spikingjelly", "snntorch", "relu-floor")
NUM_CLASSES = 10
CHANNELS = (32, 64)
INPUT_SIZE = 28


# ----------------------------------------------------------------------------------------------------------------------
# the networks
# ----------------------------------------------------------------------------------------------------------------------
def _replace_neurons_with_relu(module: nn.Module) -> int:
    """Swap every spiking neuron under ``module`` for ``nn.ReLU`` in place; returns how many were swapped."""
    swapped = 0
    for name, child in module.named_children():
        if is_spiking(child):
            setattr(module, name, nn.ReLU())
            swapped += 1
        else:
            swapped += _replace_neurons_with_relu(child)
    return swapped


def build_sparsesnn(backend: str) -> nn.Module:
    if backend == "auto":
        return build_model("convnet")
    return build_model("convnet", neuron=NeuronSpec(backend=backend))  # type: ignore[arg-type]


def build_relu_floor() -> nn.Module:
    model = build_model("convnet")
    if _replace_neurons_with_relu(model) != len(CHANNELS):
        raise RuntimeError("expected one neuron per conv stage in the convnet")
    return model


def build_spikingjelly() -> tuple[nn.Module, Callable[[], None], dict[str, Any]]:
    """SpikingJelly multi-step net, its per-step reset, and what implementation its LIF binds to."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    lif_kwargs: dict[str, Any] = dict(
        tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m", detach_reset=False, v_reset=0.0
    )
    info: dict[str, Any] = {}
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:  # SpikingJelly 0.0.0.0.x
        lif_kwargs["backend"] = "torch"
        info["backend_argument"] = "torch"
    else:  # 2.x: implementation chosen by device; CPU always gets the torch reference
        info["backend_argument"] = "absent in this version (CPU binds the torch reference)"
    query = getattr(functional, "neuron_implementation", None)
    if query is not None:
        info["implementation"] = query("lif", torch.device("cpu")).get("implementation")

    c1, c2 = CHANNELS
    flat = c2 * (INPUT_SIZE // 4) ** 2
    net = nn.Sequential(
        layer.Conv2d(1, c1, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(c1, step_mode="m"),
        neuron.LIFNode(**lif_kwargs),
        layer.MaxPool2d(2, 2, step_mode="m"),
        layer.Conv2d(c1, c2, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(c2, step_mode="m"),
        neuron.LIFNode(**lif_kwargs),
        layer.MaxPool2d(2, 2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(flat, NUM_CLASSES, step_mode="m"),
    )
    return net, lambda: functional.reset_net(net), info


class SnnTorchConvNet(nn.Module):
    """The convnet written the usual snnTorch way: per-step layers in a Python loop over T."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch
        from snntorch import surrogate

        c1, c2 = CHANNELS
        spike_grad = surrogate.atan(alpha=2.0)
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.lif1 = snntorch.Leaky(beta=0.5, spike_grad=spike_grad, reset_mechanism="zero")
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.lif2 = snntorch.Leaky(beta=0.5, spike_grad=spike_grad, reset_mechanism="zero")
        self.fc = nn.Linear(c2 * (INPUT_SIZE // 4) ** 2, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        out = []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.bn1(self.conv1(x[t])), mem1)
            spk2, mem2 = self.lif2(self.bn2(self.conv2(F.max_pool2d(spk1, 2))), mem2)
            out.append(self.fc(F.max_pool2d(spk2, 2).flatten(1)))
        return torch.stack(out)


@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    after_step: Callable[[], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    first_step_s: float = float("nan")
    warmup_s: float = 0.0
    step_s: list[float] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)
    last_loss: float = float("nan")


def make_variant(name: str, lr: float) -> Variant:
    after: Callable[[], None] | None = None
    info: dict[str, Any] = {}
    if name == "sparsesnn":
        model = build_sparsesnn("auto")
        info["neuron_backend"] = "auto -> " + ("compiled" if _compiler_available(torch.device("cpu")) else "eager")
    elif name == "sparsesnn-eager":
        model = build_sparsesnn("eager")
        info["neuron_backend"] = "eager"
    elif name == "spikingjelly":
        model, after, info = build_spikingjelly()
    elif name == "snntorch":
        model = SnnTorchConvNet()
    elif name == "relu-floor":
        model = build_relu_floor()
    else:
        raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    model.train()
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return Variant(name, model, torch.optim.Adam(model.parameters(), lr=lr), after, info)


def train_step(v: Variant, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    v.optimizer.zero_grad(set_to_none=True)
    out = v.model(x)
    loss = F.cross_entropy(out.mean(0), y)
    loss.backward()
    v.optimizer.step()
    if v.after_step is not None:
        v.after_step()
    return loss.detach()


# ----------------------------------------------------------------------------------------------------------------------
# the neuron alone
# ----------------------------------------------------------------------------------------------------------------------
NEURON_IMPLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "fused-compiled": lambda x: lif_multistep(x, 0.5, backend="compiled"),
    "fused-eager": lambda x: lif_multistep(x, 0.5, backend="eager"),
    "reference": lambda x: lif_reference(x, 0.5),
}


def saved_for_backward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> dict[str, Any]:
    """Bytes autograd saves for backward during ``fn(x)`` (unique storages), then runs the backward."""
    storages: dict[tuple[int, int], int] = {}
    naive = 0
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal naive, count
        count += 1
        naive += t.numel() * t.element_size()
        st = t.untyped_storage()
        storages[(st.data_ptr(), st.nbytes())] = st.nbytes()
        return t

    xr = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(xr)
    out.backward(torch.ones_like(out))
    in_st = xr.untyped_storage()
    input_key = (in_st.data_ptr(), in_st.nbytes())
    total = sum(storages.values())
    input_bytes = storages.get(input_key, 0)
    return {
        "saved_bytes": total,
        "saved_bytes_excluding_input": total - input_bytes,
        "saves_the_input": input_key in storages,
        "saved_tensors": count,
        "saved_unique_storages": len(storages),
        "saved_bytes_naive_sum": naive,
    }


def measure_neuron(shape: Sequence[int], repeats: int, seed: int, compiled_ok: bool) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen) * 2.0
    grad = torch.randn(*shape, generator=gen)
    impls = {k: f for k, f in NEURON_IMPLS.items() if compiled_ok or k != "fused-compiled"}
    results: dict[str, dict[str, Any]] = {}
    for name, fn in impls.items():
        results[name] = saved_for_backward(fn, x)  # also warms up (compiles) the kernel at this shape
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            xr = x.detach().requires_grad_()
            t0 = time.perf_counter()
            fn(xr).backward(grad)
            times[name].append(time.perf_counter() - t0)
            del xr
    for name in impls:
        results[name]["fwd_bwd_ms"] = _summary([t * 1e3 for t in times[name]])
    ref = results["reference"]
    for r in results.values():
        r["saved_bytes_vs_reference"] = r["saved_bytes"] / ref["saved_bytes"]
        r["speedup_vs_reference"] = ref["fwd_bwd_ms"]["median"] / r["fwd_bwd_ms"]["median"]
    return {
        "shape": list(shape),
        "dtype": "float32",
        "repeats": repeats,
        "tau": 2.0,
        "note": "saved_bytes counts unique storages packed by saved_tensors_hooks; fwd_bwd_ms is wall time",
        "results": results,
    }


# ----------------------------------------------------------------------------------------------------------------------
# running and reporting
# ----------------------------------------------------------------------------------------------------------------------
def _require_peers() -> None:
    missing = [m for m in ("spikingjelly", "snntorch") if _version(m) is None]
    if missing:
        raise SystemExit(
            f"bench/throughput.py needs the peer libraries {missing}: see ../shared/PERF-NOTES.md "
            "(pip install --no-deps spikingjelly==2.0.0 numpy loguru tqdm packaging; pip install snntorch==1.0.0)"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 10; --quick: 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default 5; quick: 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant first (default 3; quick: 1)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; quick: 16)")
    p.add_argument("--time-steps", type=int, default=4, help="T (default 4)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--neuron-repeats", type=int, default=None, help="neuron fwd+bwd repeats (default 5; quick: 2)")
    p.add_argument("--no-neuron", action="store_true", help="skip the neuron-alone measurement")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, 2 steps, 1 warmup, batch 16")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    defaults = (
        {"rounds": 2, "steps": 2, "warmup": 1, "batch": 16, "neuron_repeats": 2}
        if args.quick
        else {"rounds": 10, "steps": 5, "warmup": 3, "batch": 128, "neuron_repeats": 5}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("rounds", "steps", "batch", "time_steps", "threads", "neuron_repeats"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def run(args: argparse.Namespace, malloc_tuned: bool = False) -> dict[str, Any]:
    _require_peers()
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
            variants.append(make_variant(name, args.lr))
        graphs_before_warmup = _unique_graphs()
        for v in variants:
            t_start = time.perf_counter()
            for i in range(args.warmup):
                t0 = time.perf_counter()
                train_step(v, x, y)
                if i == 0:
                    v.first_step_s = time.perf_counter() - t0
            v.warmup_s = time.perf_counter() - t_start
        graphs_after_warmup = _unique_graphs()

        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                gc.collect()
                loss = torch.zeros(())
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    loss = train_step(v, x, y)
                elapsed = time.perf_counter() - t0
                v.last_loss = float(loss)
                v.step_s.append(elapsed / args.steps)
                v.samples_per_s.append(args.steps * args.batch / elapsed)
        graphs_after_timing = _unique_graphs()

        compiled_ok = _compiler_available(torch.device("cpu"))
        neuron = None
        if not args.no_neuron:
            shape = (args.time_steps, args.batch, CHANNELS[0], INPUT_SIZE, INPUT_SIZE)
            neuron = measure_neuron(shape, args.neuron_repeats, args.seed, compiled_ok)
        graphs_after_neuron = _unique_graphs()

    by = {v.name: v for v in variants}
    ours = by["sparsesnn"]
    rounds = range(args.rounds)
    ratios = {
        "sparsesnn_over_spikingjelly_samples_per_s": _summary(
            [ours.samples_per_s[i] / by["spikingjelly"].samples_per_s[i] for i in rounds]
        ),
        "sparsesnn_over_snntorch_samples_per_s": _summary(
            [ours.samples_per_s[i] / by["snntorch"].samples_per_s[i] for i in rounds]
        ),
        "sparsesnn_over_relu_floor_step_time": _summary([ours.step_s[i] / by["relu-floor"].step_s[i] for i in rounds]),
        "sparsesnn_over_sparsesnn_eager_samples_per_s": _summary(
            [ours.samples_per_s[i] / by["sparsesnn-eager"].samples_per_s[i] for i in rounds]
        ),
    }
    variant_json: dict[str, Any] = {}
    for v in variants:
        median_step = statistics.median(v.step_s)
        variant_json[v.name] = {
            "samples_per_s": _summary(v.samples_per_s),
            "step_ms": _summary([s * 1e3 for s in v.step_s]),
            "sparsesnn_over_this_samples_per_s": _summary([ours.samples_per_s[i] / v.samples_per_s[i] for i in rounds]),
            "first_step_s": v.first_step_s,
            "compile_s_estimate": v.first_step_s - median_step if args.warmup else None,
            "warmup_s": v.warmup_s,
            "final_loss": v.last_loss,
            **v.info,
        }
    env_keys = ("LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SPARSESNN_NO_COMPILE", "SPARSESNN_TUNE_MALLOC")
    return {
        "benchmark": "conv SNN training throughput (fwd+bwd+Adam step), CPU",
        "config": {
            "model": "Conv(1->32,3,p1,nobias)-BN-LIF-MaxPool2-Conv(32->64)-BN-LIF-MaxPool2-FC(3136->10)",
            "time_steps": args.time_steps,
            "batch": args.batch,
            "input": f"random [T,B,1,{INPUT_SIZE},{INPUT_SIZE}] (same image every step), seed {args.seed}",
            "loss": "cross_entropy(output.mean(0), labels)",
            "optimizer": f"Adam(lr={args.lr})",
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "warmup_steps": args.warmup,
            "quick": args.quick,
            "order": "round-robin, rotated by one variant per round",
            "variants": list(VARIANTS),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sparsesnn": getattr(sparsesnn, "__version__", None) or _version("sparsesnn"),
            "spikingjelly": _version("spikingjelly"),
            "snntorch": _version("snntorch"),
        },
        "machine": {
            "processor": platform.processor(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
            "malloc_tuned": malloc_tuned,
            "env": {k: os.environ[k] for k in env_keys if k in os.environ}
            | {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        },
        "variants": variant_json,
        "ratios": ratios,
        "compile": {
            "graphs_compiled_in_warmup": graphs_after_warmup - graphs_before_warmup,
            "graphs_compiled_during_timed_rounds": graphs_after_timing - graphs_after_warmup,
            "graphs_compiled_for_neuron_measurement": graphs_after_neuron - graphs_after_timing,
            "dynamo_counters": _dynamo_counters(),
        },
        "neuron": neuron,
        "warnings": sorted(
            {f"{w.category.__name__}: {w.message} ({_short_path(w.filename)}:{w.lineno})" for w in caught}
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"## Conv SNN training on CPU: T={cfg['time_steps']}, batch {cfg['batch']}, "
        f"{result['machine']['threads']} threads, {cfg['rounds']} rounds x {cfg['steps_per_round']} steps "
        f"(load average {result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']})",
        "",
        "| variant | samples/s median (min-max) | step ms median | sparsesnn ÷ variant, samples/s (median) |",
        "|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {_fmt_range(v['samples_per_s'], 0)} | {v['step_ms']['median']:.1f} "
            f"| {v['sparsesnn_over_this_samples_per_s']['median']:.2f} |"
        )
    r = result["ratios"]
    lines += [
        "",
        "Per-round ratios, median (min-max) over rounds:",
        f"- sparsesnn / spikingjelly samples/s: {_fmt_range(r['sparsesnn_over_spikingjelly_samples_per_s'])}",
        f"- sparsesnn / snntorch samples/s: {_fmt_range(r['sparsesnn_over_snntorch_samples_per_s'])}",
        f"- sparsesnn / relu-floor step time: {_fmt_range(r['sparsesnn_over_relu_floor_step_time'])}",
        f"- sparsesnn / sparsesnn-eager samples/s: {_fmt_range(r['sparsesnn_over_sparsesnn_eager_samples_per_s'])}",
        "",
        f"First step (includes torch.compile of the LIF kernels): sparsesnn "
        f"{result['variants']['sparsesnn']['first_step_s']:.2f} s; graphs compiled in warm-up "
        f"{result['compile']['graphs_compiled_in_warmup']}, during timed rounds "
        f"{result['compile']['graphs_compiled_during_timed_rounds']}.",
    ]
    neuron = result["neuron"]
    if neuron is not None:
        lines += [
            "",
            f"## LIF alone, fwd+bwd on {neuron['shape']} float32 ({neuron['repeats']} repeats)",
            "",
            "| implementation | saved for backward, MB | saved tensors | fwd+bwd ms median (min-max) | speed-up |",
            "|---|---|---|---|---|",
        ]
        for name, n in neuron["results"].items():
            lines.append(
                f"| {name} | {n['saved_bytes'] / 1e6:.1f} ({n['saved_bytes_vs_reference']:.2f}x) "
                f"| {n['saved_tensors']} | {_fmt_range(n['fwd_bwd_ms'], 1)} | {n['speedup_vs_reference']:.2f}x |"
            )
    if result["warnings"]:
        lines += ["", "Warnings: " + "; ".join(result["warnings"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_and_report(args, run, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
