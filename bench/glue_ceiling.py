"""How much of a deployed convnet's time is glue: the deployed model against its own kernels called back to back.

``deploy`` runs the library's ``ConvNet`` (``features``: spiking conv blocks each followed by a 2x2 max pool;
``classifier``: spiking ``Linear`` blocks and a readout) as fused containers (:mod:`sparsesnn.deploy.block_fusion`):
at batch 1 the compiled kernels are only part of a call, the rest is Python and torch glue between them (module
calls, the fused paths' structure checks, tensor reshapes and wraps). :func:`direct_path` builds, for one deployed
model, a function that calls the same compiled kernels with the same arrays in the same order, with nothing between
them but numpy views and buffers; its outputs are checked equal to the model's bit for bit on every timed input. The
gap between the two is what a per-shape plan inside ``deploy`` could take out, and the ratio of two rows' direct
paths is what their twin ratio would be without the glue.

Batch 1, one thread (the direct path calls each kernel on the whole batch, as the layers do on one thread).

    PYTHONPATH=. python bench/glue_ceiling.py [--dataset mnist] [--rows dense,esl10_macs_block] [--rounds 15] \\
        [--json bench/out/glue_ceiling.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import emit, loadavg, machine, round_robin_per_sample, summary

from sparsesnn.deploy.block_fusion import (
    FusedSequential,
    _block_parts,
    _folded_children,
    _numba_lif_pool,
    _pair_parts,
)
from sparsesnn.deploy.event_kernels import event_kernels
from sparsesnn.deploy.event_layers import EventConv2d, EventLinear
from sparsesnn.deploy.lif import _numba_lif
from sparsesnn.deploy.passes import FoldedNorm, StepInvariant

Stage = Callable[[np.ndarray, int, int], np.ndarray]


def _layer(stateless: nn.Module) -> nn.Module:
    """The one layer of ``[StepInvariant(]SeqFolded(layer [, FoldedNorm])[)]`` (a folded norm is part of the layer),
    looked through as the fused paths look (:func:`~sparsesnn.deploy.block_fusion._folded_children`)."""
    children = _folded_children(stateless) or ()
    if not 1 <= len(children) <= 2 or (len(children) == 2 and type(children[1]) is not FoldedNorm):
        raise ValueError(f"not SeqFolded(layer [, FoldedNorm]): {stateless}")
    return children[0]


def _conv_pool_stage(block: nn.Module, pool: nn.Module) -> Stage:
    """``pool(block(x))`` for ``x`` ``[T, B, C, H, W]`` (NCHW, contiguous, or one step repeated: stride 0 over T):
    the conv's kernel, then the fused neuron-and-pool loop, as :func:`~sparsesnn.deploy.block_fusion.run_pair`."""
    parts = _pair_parts(block, pool)
    if parts is None:
        raise ValueError(f"not a fusable (block, pool) pair: {block}, {pool}")
    stateless, lif = parts
    invariant = type(stateless) is StepInvariant
    layer = _layer(stateless)
    lif_pool = _numba_lif_pool()
    scalars = lif._scalars
    if type(layer) is EventConv2d:
        calls: dict[tuple[int, int], Callable[[np.ndarray, np.ndarray], None]] = {}

        def charge(a: np.ndarray, n: int) -> tuple[np.ndarray, int, int, int, bool]:
            _n, _c, h, w = a.shape
            ho, wo = layer.output_size(h, w)
            width = layer._start.shape[0]
            call = calls.get((h, w))
            if call is None:
                call = calls[(h, w)] = layer._kernel(False, h, w, wo * width)
            out = np.empty((n, ho, wo, width), np.float32)
            call(a.reshape(n, -1), out)
            if width != layer.out_channels:
                out = np.ascontiguousarray(out[..., : layer.out_channels])
            return out, layer.out_channels, ho, wo, True

    elif type(layer) is nn.Conv2d:

        def charge(a: np.ndarray, n: int) -> tuple[np.ndarray, int, int, int, bool]:
            y = layer._conv_forward(torch.from_numpy(a), layer.weight, layer.bias)
            return y.numpy(), y.shape[1], y.shape[2], y.shape[3], False

    else:
        raise ValueError(f"no direct kernel for {type(layer).__name__}")

    def stage(x: np.ndarray, steps: int, batch: int) -> np.ndarray:
        a = x[:1] if invariant and x.shape[0] > 1 and x.strides[0] == 0 else x  # one step repeated: that step
        s = a.shape[0]
        out, channels, h, w, channels_last = charge(a.reshape(s * batch, *a.shape[2:]), s * batch)
        pooled = np.empty((steps, batch, channels, h // 2, w // 2), np.float32)
        lif_pool(out.reshape(s, -1), *scalars, pooled, h, w, channels_last)
        return pooled

    return stage


def _linear_charge(layer: nn.Module) -> Callable[[np.ndarray, int, int], np.ndarray]:
    """``[T * B, out]`` charge of ``layer`` (``EventLinear`` or ``nn.Linear``) for ``x`` ``[T, B, in]`` contiguous, as
    the fused paths compute it (a block-sparse ``EventLinear`` adds each sample's steps together)."""
    if type(layer) is EventLinear:
        k = event_kernels()
        start = layer._start
        if layer.layout == "blocks":
            ptr, offsets, vals = layer.block_arrays()
        call = layer._kernel()

        def charge(x: np.ndarray, steps: int, batch: int) -> np.ndarray:
            out = np.empty((steps * batch, start.shape[0]), np.float32)
            if layer.layout == "blocks" and steps > 1:
                k.linear_blocks_steps(x, ptr, offsets, vals, start, out.reshape(steps, batch, -1), 0, batch)
            else:
                call(x.reshape(steps * batch, -1), out)
            return out if out.shape[1] == layer.out_features else np.ascontiguousarray(out[:, : layer.out_features])

        return charge
    if type(layer) is nn.Linear:

        def dense(x: np.ndarray, steps: int, batch: int) -> np.ndarray:
            y = nn.functional.linear(torch.from_numpy(x.reshape(steps * batch, -1)), layer.weight, layer.bias)
            return y.numpy()

        return dense
    raise ValueError(f"no direct kernel for {type(layer).__name__}")


def _classifier_stages(classifier: nn.Module) -> list[Stage]:
    """One stage per child of the classifier: a spiking ``Linear`` block (charge, then the neurons' loop from rest),
    or the readout (its charge), each on ``[T, B, F]``."""
    stages: list[Stage] = []
    lif_loop = _numba_lif()
    for child in classifier.children():
        parts = _block_parts(child)  # a spiking block, as the fused paths find one
        if parts is not None:
            stateless, lif = parts
            charge = _linear_charge(_layer(stateless))
            scalars, v_reset = lif._scalars, lif.params.v_reset

            def block(x: np.ndarray, steps: int, batch: int, charge: Any = charge, s: Any = scalars, v: Any = v_reset):
                flat = charge(x, steps, batch).reshape(steps, -1)
                spikes = np.empty_like(flat)
                lif_loop(flat, *s, spikes, np.full(flat.shape[1], v, np.float32))
                return spikes.reshape(steps, batch, -1)

            stages.append(block)
        else:
            charge = _linear_charge(_layer(child))
            stages.append(lambda x, steps, batch, charge=charge: charge(x, steps, batch).reshape(steps, batch, -1))
    return stages


def direct_path(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model(x)`` for a deployed ``ConvNet`` (fused containers, readout without output neurons) by its kernels
    called back to back on numpy buffers; ValueError for any other structure."""
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if type(features) is not FusedSequential or not isinstance(classifier, nn.Sequential):
        raise ValueError("not a deployed ConvNet with fused features")
    children = list(features.children())
    if sorted(features.fused_starts) != list(range(0, len(children), 2)):
        raise ValueError(f"features are not (block, pool) pairs only: fused at {features.fused_starts}")
    stages = [_conv_pool_stage(children[i], children[i + 1]) for i in features.fused_starts]
    head = _classifier_stages(classifier)

    def run(x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[0], x.shape[1]
        a = x.numpy()
        for stage in stages:
            a = stage(a, steps, batch)
        a = a.reshape(steps, batch, -1)
        for stage in head:
            a = stage(a, steps, batch)
        return torch.from_numpy(a)

    return run


def main(argv: list[str] | None = None) -> int:
    from sparsity_pays import DATASETS, OUT_ROOT, load_row

    from sparsesnn.deploy.api import deploy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--out", type=Path, default=None, help="rows' directory (default bench/out/sparsity_pays/DS)")
    parser.add_argument("--rows", default="dense,esl10_macs_block", help="comma-separated finished rows")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--samples", type=int, default=32, help="test samples per round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or OUT_ROOT / args.dataset
    torch.set_num_threads(1)
    load = loadavg()
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    inputs: list[torch.Tensor] = []
    with torch.no_grad():
        for name in args.rows.split(","):
            row = load_row(name, out / name)
            head = row["test"][0][0]
            if not inputs:
                inputs = [head[:, i : i + 1] for i in range(min(args.samples, head.shape[1]))]
            deployed, _report = deploy(row["bundle"].model, inputs[0])
            direct = direct_path(deployed)
            for x in inputs:
                if not torch.equal(direct(x), deployed(x)):
                    raise AssertionError(f"{name}: the direct path's output differs from the deployed model's")
            models[name], models[f"{name} (kernels only)"] = deployed, direct
        ms = round_robin_per_sample(models, inputs, args.rounds)  # type: ignore[arg-type]
    med = {k: statistics.median(v) for k, v in ms.items()}
    names = args.rows.split(",")
    rows = [
        {
            "name": n,
            "deployed_ms": summary(ms[n]),
            "kernels_only_ms": summary(ms[f"{n} (kernels only)"]),
            "glue_ms": med[n] - med[f"{n} (kernels only)"],
            "glue_share": 1 - med[f"{n} (kernels only)"] / med[n],
        }
        for n in names
    ]
    ref = names[0]
    for r in rows:
        r[f"vs_{ref}_deployed"] = med[ref] / med[r["name"]]
        r[f"vs_{ref}_kernels_only"] = med[f"{ref} (kernels only)"] / med[f"{r['name']} (kernels only)"]
    lines = [
        f"| row | deployed ms | kernels only ms | glue ms (share) | vs {ref} deployed | vs {ref} kernels only |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['deployed_ms']['median']:.3f} | {r['kernels_only_ms']['median']:.3f} | "
            f"{r['glue_ms']:.3f} ({r['glue_share']:.0%}) | {r[f'vs_{ref}_deployed']:.2f}x | "
            f"{r[f'vs_{ref}_kernels_only']:.2f}x |"
        )
    result = {
        "dataset": args.dataset,
        "rows": rows,
        "samples": len(inputs),
        "machine": machine(load, malloc_tuned=False),
    }
    emit(result, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
