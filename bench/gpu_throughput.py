"""Training-step time on a GPU: sparsesnn against SpikingJelly 2.0 and a ReLU floor, fp32 and bf16, round robin.

Reproduce (from the repository root, with the project importable and SpikingJelly 2.0 installed)::

    python bench/gpu_throughput.py --json gpu.json                      # CUDA: every net, variant and precision
    python bench/gpu_throughput.py --nets resnet19 --variants sparsesnn-compile-cl,spikingjelly-compile
    python bench/gpu_throughput.py --device cpu --quick                 # smoke test (CI): tiny nets, eager variants

Networks (``--nets``)
    ``convnet`` (MNIST shape, batch 128, T = 4), ``resnet19`` (CIFAR-10 shape 3x32x32, batch 64, T = 4) and
    ``vggsnn`` (DVS shape 2x48x48, batch 64, T = 10), built by ``sparsesnn.models.build_model`` as the recipes build
    them. Random inputs and labels, fixed per net. ``--quick`` shrinks every net and batch to a smoke-test size.

Variants (``--variants``; a name is a family and flags joined by ``-``)
    families: ``sparsesnn`` (our model, fused LIF operators: Triton on CUDA), ``spikingjelly`` (the same model with
    every LIF swapped for SpikingJelly 2.0's ``neuron.LIFNode(step_mode="m")`` with the same tau, decay_input, reset
    and ATan surrogate; its Triton kernel on CUDA, ``functional.reset_net`` after each step), ``relu`` (every LIF
    replaced by ReLU: the conv/BN/linear work alone, the floor any neuron adds to).
    flags: ``compile`` (whole model under ``torch.compile``: ours and the floor as ``run.compile`` does it, mode
    "default"; SpikingJelly with the options its documentation recommends, ``layout_optimization=False`` and no
    CUDA graphs), ``cl`` (``run.channels_last``: weights and activations channels-last), ``esl10`` (an ESL-SNN learner
    at 10 % density rewiring every 25 steps, stepping after every optimiser step). No ``compile`` flag means eager.
    The *default recipe* on a GPU is ``sparsesnn-compile-cl`` (configs/cifar10_resnet19.toml: ``run.compile`` and
    ``run.channels_last``), in the precision of the row.

One step (identical for every variant, what ``sparsesnn train`` does): forward and cross-entropy on the time-mean
output under ``torch.autocast`` for bf16 (``sparsesnn.train.step.TrainStep``), backward, one host read of the loss
and accuracy (the engine's per-step synchronisation), SGD (momentum 0.9) step, then the learner's step or
SpikingJelly's ``reset_net``. ``torch.backends.cudnn.benchmark`` is on for every variant, as in a recipe with
``run.deterministic = false``.

Method: every variant is built and warmed up (``--warmup`` steps; the first includes compilation, reported as
``first_step_s``), then timed round robin: each round runs ``--steps`` steps of every variant in a rotating order,
synchronised before and after; medians over rounds and per-round ratios against SpikingJelly are reported. Peak
memory is the peak of one extra step after a reset of CUDA's peak counter, and the part of it the step allocated.
``graphs_during_timing`` counts graphs torch.compile built in the timed rounds (0 unless something recompiled).

The neuron alone (``--lif``): fused LIF forward + backward on ``[4, 64, 128, 32, 32]`` (ResNet19's first stage)
timed with CUDA events (``ms``, launch gaps included) and as the sum of its kernels' device time from
``torch.profiler`` (``kernel_ms``) for our operators, the implementation before them (an ``autograd.Function`` calling
``torch.compile``'d loops), SpikingJelly's LIFNode and an ``x * 1`` copy floor; and the host time per call, from
``torch.profiler`` and from the wall time of many calls on a tiny tensor (where the GPU work is negligible).

The JSON is rewritten after every network, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsesnn.metrics import correct_tensor
from sparsesnn.models import build_model
from sparsesnn.neuron.lif import LIF
from sparsesnn.neuron.spiking import is_spiking
from sparsesnn.train.losses import build_loss
from sparsesnn.train.step import TrainStep

NETS: dict[str, dict[str, Any]] = {
    "convnet": {"model": "convnet", "kwargs": {}, "shape": (4, 128, 1, 28, 28)},
    "resnet19": {"model": "resnet19", "kwargs": {"in_channels": 3}, "shape": (4, 64, 3, 32, 32)},
    "vggsnn": {"model": "vggsnn", "kwargs": {"in_channels": 2, "input_size": 48}, "shape": (10, 64, 2, 48, 48)},
}
QUICK_NETS: dict[str, dict[str, Any]] = {
    "convnet": {"model": "convnet", "kwargs": {"channels": (4, 8)}, "shape": (2, 8, 1, 28, 28)},
    "resnet19": {
        "model": "resnet19",
        "kwargs": {"in_channels": 3, "stem_channels": 8, "widths": (8, 16, 16), "blocks": (1, 1, 1), "hidden": 16},
        "shape": (2, 4, 3, 16, 16),
    },
    "vggsnn": {
        "model": "vggsnn",
        "kwargs": {"in_channels": 2, "input_size": 16, "cfg": (8, "P", 16, "P")},
        "shape": (2, 4, 2, 16, 16),
    },
}
FAMILIES = ("sparsesnn", "spikingjelly", "relu")
FLAGS = ("compile", "cl", "esl10")
DEFAULT_VARIANTS = (
    "sparsesnn-eager",
    "sparsesnn-compile",
    "sparsesnn-compile-cl",
    "sparsesnn-esl10-compile-cl",
    "spikingjelly-eager",
    "spikingjelly-compile",
    "relu-eager",
    "relu-compile-cl",
)
QUICK_VARIANTS = ("sparsesnn-eager", "sparsesnn-eager-cl", "sparsesnn-esl10-eager", "spikingjelly-eager", "relu-eager")
#: the configuration of the GPU recipes (configs/cifar10_resnet19.toml), reported as "default recipe"
RECIPE_VARIANT = "sparsesnn-compile-cl"
NUM_CLASSES = 10


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    compile: bool
    channels_last: bool
    esl: bool

    @classmethod
    def parse(cls, name: str) -> Variant:
        family, *flags = name.split("-")
        unknown = [f for f in flags if f not in (*FLAGS, "eager")]
        if family not in FAMILIES or unknown:
            raise ValueError(f"variant {name!r}: family must be one of {FAMILIES}, flags among {FLAGS} or 'eager'")
        if "esl10" in flags and family != "sparsesnn":
            raise ValueError(f"variant {name!r}: the ESL learner runs on sparsesnn models only")
        return cls(name, family, "compile" in flags, "cl" in flags, "esl10" in flags)


def swap_neurons(module: nn.Module, make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every spiking neuron below ``module`` by ``make(neuron)``; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if is_spiking(child):
            setattr(module, name, make(child))
            count += 1
        else:
            count += swap_neurons(child, make)
    return count


def spikingjelly_node(lif: nn.Module) -> nn.Module:
    """SpikingJelly 2.0's multi-step LIFNode with our neuron's tau, threshold, reset, input decay and ATan."""
    from spikingjelly.activation_based import neuron, surrogate

    assert isinstance(lif, LIF)
    return neuron.LIFNode(
        tau=float(lif.tau),
        decay_input=bool(lif.decay_input),
        v_threshold=float(lif.v_threshold),
        v_reset=lif.v_reset,
        detach_reset=bool(lif.detach_reset),
        surrogate_function=surrogate.ATan(alpha=float(getattr(lif.surrogate, "alpha", 2.0))),
        step_mode="m",
    )


@dataclass
class Built:
    """A variant ready to step: its model, train step, learner and after-step hook."""

    variant: Variant
    model: nn.Module
    step: TrainStep
    learner: Any
    after: Callable[[], None] | None

    def run(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Any) -> float:
        with self.step.autocast():
            out = self.step.forward(x)
            loss = loss_fn(out, y)
        self.step.backward(loss)
        value, _correct = torch.stack([loss.detach().float(), correct_tensor(out.detach(), y)]).tolist()
        self.step.apply()
        if self.learner is not None:
            self.learner.step()
        if self.after is not None:
            self.after()
        return float(value)


def build(variant: Variant, net: dict[str, Any], precision: str, device: torch.device) -> Built:
    model = build_model(net["model"], num_classes=NUM_CLASSES, **net["kwargs"])
    after = None
    if variant.family == "spikingjelly":
        from spikingjelly.activation_based import functional

        swap_neurons(model, spikingjelly_node)
        after = lambda: functional.reset_net(model)  # noqa: E731
    elif variant.family == "relu":
        swap_neurons(model, lambda _n: nn.ReLU())
    model = model.to(device).train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    learner = None
    if variant.esl:
        from sparsesnn.sparse import METHODS

        # rewiring every 25 steps (the CIFAR recipe: 100) so the timed rounds include topology updates and the dense
        # gradient captures before them: an upper bound on the recipe's overhead
        learner = METHODS["esl"](model, optimizer, density=0.1, total_steps=1_000_000, update_every=25, seed=0)
    ours_compiled = variant.compile and variant.family != "spikingjelly"
    step = TrainStep(model, optimizer, device=device, precision=precision, compile=ours_compiled)  # type: ignore[arg-type]
    if variant.compile and variant.family == "spikingjelly":  # SpikingJelly's recommended compile options
        step.forward_module = torch.compile(model, options={"layout_optimization": False, "triton.cudagraphs": False})
        step.compiled = True
    return Built(variant, model, step, learner, after)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def bench_net(
    name: str, net: dict[str, Any], variants: Sequence[Variant], precision: str, args: argparse.Namespace
) -> dict[str, Any]:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    shape = net["shape"]
    x = (torch.rand(shape, generator=gen) * 2).to(device)
    y = torch.randint(0, NUM_CLASSES, (shape[1],), generator=gen).to(device)
    loss_fn = build_loss("ce")
    out: dict[str, Any] = {"shape": list(shape), "precision": precision, "variants": {}}
    built: dict[str, Built] = {}
    for v in variants:
        entry: dict[str, Any] = {}
        out["variants"][v.name] = entry
        try:
            b = build(v, net, precision, device)
            t0 = time.perf_counter()
            b.run(x, y, loss_fn)
            _sync(device)
            entry["first_step_s"] = time.perf_counter() - t0
            for _ in range(args.warmup - 1):
                b.run(x, y, loss_fn)
            _sync(device)
            built[v.name] = b
        except Exception as exc:  # one variant failing (e.g. a peer's kernel) must not lose the others' numbers
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            entry["trace"] = traceback.format_exc()[-3000:]
            print(f"  {name} {precision} {v.name}: {entry['error']}", file=sys.stderr, flush=True)
    names = list(built)
    times: dict[str, list[float]] = {n: [] for n in names}
    graphs_before = _graphs()
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for n in order:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = built[n].run(x, y, loss_fn)
            _sync(device)
            times[n].append((time.perf_counter() - t0) / args.steps * 1e3)
            out["variants"][n]["loss"] = loss
    out["graphs_during_timing"] = _graphs() - graphs_before
    for n in names:
        entry = out["variants"][n]
        entry["ms"] = {"median": statistics.median(times[n]), "per_round": times[n]}
        entry["samples_per_s"] = shape[1] / entry["ms"]["median"] * 1e3
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            built[n].run(x, y, loss_fn)
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            entry["peak_mem_mb"] = peak / 2**20
            entry["step_mem_mb"] = (peak - base) / 2**20
    out["ratios"] = _ratios(times)
    built.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _ratios(times: dict[str, list[float]]) -> dict[str, Any]:
    """Per-round step-time ratios ``other / ours`` (> 1: ours is faster) against the peers, and ESL's overhead."""
    ratios: dict[str, Any] = {}

    def add(key: str, num: str, den: str) -> None:
        if num in times and den in times:
            per = [a / b for a, b in zip(times[num], times[den], strict=True)]
            ratios[key] = {"median": statistics.median(per), "per_round": per}

    for ours in (n for n in times if n.startswith("sparsesnn") and "esl10" not in n):
        for peer in ("spikingjelly-eager", "spikingjelly-compile", "relu-eager", "relu-compile", "relu-compile-cl"):
            add(f"{peer}_over_{ours}", peer, ours)
    for esl in (n for n in times if "esl10" in n):
        add(f"{esl}_over_{esl.replace('-esl10', '')}", esl, esl.replace("-esl10", ""))
    return ratios


# ----------------------------------------------------------------------------------------------------------------------
# the neuron alone
# ----------------------------------------------------------------------------------------------------------------------
class BeforeLIF(torch.autograd.Function):
    """The neuron as it was before the operators (3dfc03b), kept here as the "before" of the host-time comparison: an
    ``autograd.Function`` whose forward and backward call ``torch.compile``'d loops (ATan(2), tau 2, hard reset)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        from sparsesnn.neuron.kernels.op import LIFParameters, compiled_kernels

        forward, _ = compiled_kernels()
        spikes, charge = forward(x.detach().reshape(x.shape[0], -1), k, LIFParameters())
        ctx.save_for_backward(charge, k)
        ctx.shape = x.shape
        return spikes.reshape(x.shape)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        from sparsesnn.neuron.kernels.op import LIFParameters, compiled_kernels

        charge, k = ctx.saved_tensors
        _, backward = compiled_kernels()
        flat = grad.contiguous().reshape(charge.shape)
        grad_x, _ = backward(flat, charge, k, LIFParameters(), False)
        return grad_x.reshape(ctx.shape), None


def bench_lif(args: argparse.Namespace) -> dict[str, Any]:
    """Forward + backward of one LIF layer: device time per call (CUDA events) and host time per call."""
    from sparsesnn.neuron.functional import lif_multistep

    device = torch.device(args.device)
    shape = (4, 8, 16, 8, 8) if args.quick else (4, 64, 128, 32, 32)
    result: dict[str, Any] = {"shape": list(shape)}
    k_old = torch.tensor(0.5, device=device)

    def ours(x: torch.Tensor) -> torch.Tensor:
        return lif_multistep(x, 0.5)

    def before(x: torch.Tensor) -> torch.Tensor:  # autograd.Function around torch.compile'd loops
        return BeforeLIF.apply(x, k_old)  # type: ignore[no-any-return]

    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "ours": ours,
        "before": before,
        "copy_floor": lambda x: x * 1,
    }
    try:
        sj = spikingjelly_node(LIF(2.0)).to(device)
        from spikingjelly.activation_based import functional

        def spikingjelly(x: torch.Tensor) -> torch.Tensor:
            out = sj(x)
            functional.reset_net(sj)
            return out  # type: ignore[no-any-return]

        fns["spikingjelly"] = spikingjelly
    except ImportError as exc:
        result["spikingjelly_error"] = repr(exc)
    for dtype in (torch.float32, torch.bfloat16):
        base = (torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 2).to(device, dtype)
        grad = torch.randn_like(base)
        row: dict[str, Any] = {}
        for name, fn in fns.items():
            try:
                row[name] = _time_fwd_bwd(fn, base, grad, device, args)
            except Exception as exc:
                row[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        result[str(dtype).removeprefix("torch.")] = row
    tiny = torch.randn(4, 2, 8, device=device)
    host: dict[str, Any] = {}
    for name in ("ours", "before"):
        host[name] = _host_time_per_call(fns[name], tiny, device)
    result["host_us_per_call"] = host
    return result


def _time_fwd_bwd(
    fn: Callable[[torch.Tensor], torch.Tensor],
    base: torch.Tensor,
    grad: torch.Tensor,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, float]:
    def once() -> None:
        xr = base.detach().requires_grad_()
        fn(xr).backward(grad)

    for _ in range(3):
        once()
    _sync(device)
    reps = 3 if args.quick else 20
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            once()
        end.record()
        torch.cuda.synchronize(device)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:  # the kernels' own time, launch gaps excluded
            for _ in range(reps):
                once()
            torch.cuda.synchronize(device)
        kernel_us = sum(e.self_device_time_total for e in prof.key_averages())
        return {"ms": start.elapsed_time(end) / reps, "kernel_ms": kernel_us / reps / 1e3}
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    return {"ms": (time.perf_counter() - t0) / reps * 1e3}


def _host_time_per_call(fn: Callable[[torch.Tensor], torch.Tensor], tiny: torch.Tensor, device: torch.device) -> dict:
    """Host time of one forward + backward on a tiny tensor: wall time over many calls, and torch.profiler's CPU time
    per call of the forward and backward ops."""
    from torch.profiler import ProfilerActivity, profile

    def once() -> None:
        xr = tiny.detach().requires_grad_()
        fn(xr).sum().backward()

    for _ in range(5):
        once()
    _sync(device)
    calls = 200
    t0 = time.perf_counter()
    for _ in range(calls):
        once()
    _sync(device)
    wall_us = (time.perf_counter() - t0) / calls * 1e6
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(20):
            once()
        _sync(device)
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=12)
    events = {e.key: e for e in prof.key_averages()}
    picked = {}
    for key in (
        "EagerLIF",
        "EagerLIFBackward",
        "sparsesnn::lif_forward",
        "sparsesnn::lif_backward",
        "BeforeLIF",
        "BeforeLIFBackward",
    ):
        if key in events:
            picked[key] = events[key].cpu_time_total / max(events[key].count, 1)
    return {"wall_us_fwd_bwd": wall_us, "profiler_cpu_us_per_call": picked, "profiler_table": table}


# ----------------------------------------------------------------------------------------------------------------------
# driver and report
# ----------------------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny nets and batches, eager variants")
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {list(NETS)}")
    p.add_argument("--variants", help=f"comma-separated variant names (default: {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5; quick 2)")
    p.add_argument("--steps", type=int, help="steps per variant per round (default 10; quick 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant, the first compiles")
    p.add_argument("--lif", action=argparse.BooleanOptionalAction, default=True, help="also time the neuron alone")
    p.add_argument("--json", type=Path, help="write the JSON here too (rewritten after every network)")
    p.add_argument("--md", type=Path, help="write the Markdown table here too")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.steps = args.steps or (2 if args.quick else 10)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_throughput: CUDA is not available here; use --device cpu --quick for the smoke test")
    torch.backends.cudnn.benchmark = True
    nets = QUICK_NETS if args.quick else NETS
    names = [n for n in args.nets.split(",") if n]
    unknown = [n for n in names if n not in nets]
    if unknown:
        raise SystemExit(f"gpu_throughput: unknown nets {unknown}; choose from {list(nets)}")
    variant_names = args.variants.split(",") if args.variants else (QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)
    variants = [Variant.parse(v) for v in variant_names]
    result: dict[str, Any] = {
        "benchmark": "gpu_throughput",
        "config": {
            "device": args.device,
            "quick": args.quick,
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup": args.warmup,
            "recipe_variant": RECIPE_VARIANT,
        },
        "machine": _machine(device),
        "nets": {},
    }
    for net in names:
        for precision in args.precisions.split(","):
            key = f"{net}/{precision}"
            t0 = time.perf_counter()
            try:
                result["nets"][key] = bench_net(net, nets[net], variants, precision, args)
            except Exception as exc:
                result["nets"][key] = {"error": repr(exc), "trace": traceback.format_exc()[-3000:]}
            result["nets"][key]["wall_s"] = time.perf_counter() - t0
            print(f"{key}: {_one_line(result['nets'][key])}", file=sys.stderr, flush=True)
            _write(result, args.json)
    if args.lif:
        try:
            result["lif"] = bench_lif(args)
        except Exception as exc:
            result["lif"] = {"error": repr(exc), "trace": traceback.format_exc()[-3000:]}
        _write(result, args.json)
    return result


def _one_line(net: dict[str, Any]) -> str:
    cells = []
    for name, v in net.get("variants", {}).items():
        cells.append(f"{name} {v['ms']['median']:.2f} ms" if "ms" in v else f"{name} ERROR")
    return "; ".join(cells) or str(net.get("error"))


def _write(result: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")


def _machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        import spikingjelly

        info["spikingjelly"] = getattr(spikingjelly, "__version__", "installed")
    except ImportError:
        info["spikingjelly"] = None
    return info


def markdown(result: dict[str, Any]) -> str:
    """One table: ms per step (median) per net/precision and variant, with the ratio SpikingJelly / ours."""
    variants: list[str] = []
    for net in result["nets"].values():
        for name in net.get("variants", {}):
            if name not in variants:
                variants.append(name)
    lines = [
        "| net / precision | " + " | ".join(variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for key, net in result["nets"].items():
        cells = []
        for name in variants:
            v = net.get("variants", {}).get(name, {})
            if "ms" in v:
                mem = f", {v['peak_mem_mb'] / 1024:.1f} GB" if "peak_mem_mb" in v else ""
                cells.append(f"{v['ms']['median']:.2f} ms{mem}")
            else:
                cells.append("error" if "error" in v else "")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    recipe = result["config"]["recipe_variant"]
    lines.append("")
    lines.append(f"Ratios (per-round medians; > 1 means {recipe} is faster):")
    for key, net in result["nets"].items():
        for peer in ("spikingjelly-compile", "spikingjelly-eager"):
            r = net.get("ratios", {}).get(f"{peer}_over_{recipe}")
            if r:
                lines.append(f"- {key}: {peer} / {recipe} = {r['median']:.3f}")
        esl = net.get("ratios", {}).get(f"sparsesnn-esl10-compile-cl_over_{recipe}")
        if esl:
            lines.append(f"- {key}: ESL 10 % / dense (same settings) = {esl['median']:.3f}")
    lif = result.get("lif")
    if isinstance(lif, dict) and "host_us_per_call" in lif:
        lines.append("")
        lines.append(f"LIF fwd+bwd on {lif['shape']}:")
        for dtype in ("float32", "bfloat16"):
            row = lif.get(dtype, {})
            timed = [
                f"{k} {v['ms']:.3f} ms" + (f" ({v['kernel_ms']:.3f} ms in kernels)" if "kernel_ms" in v else "")
                for k, v in row.items()
                if isinstance(v, dict) and "ms" in v
            ]
            lines.append(f"- {dtype}: " + ", ".join(timed))
        for name, h in lif["host_us_per_call"].items():
            lines.append(f"- host time per fwd+bwd call, {name}: {h['wall_us_fwd_bwd']:.0f} us")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with torch.random.fork_rng(devices=[]):
        result = run(args)
    text = markdown(result)
    print(json.dumps({k: v for k, v in result.items() if k != "lif"}, indent=1))
    print()
    print(text)
    _write(result, args.json)
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
