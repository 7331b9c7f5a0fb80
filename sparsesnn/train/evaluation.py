"""One evaluation pass of a run's model over a dataset: loss, accuracy and, optionally, what the monitors count.

The trainer evaluates every epoch with it and a finished run is evaluated with it (:mod:`.run_reader`), so both give
the same numbers for the same state. The pass is deterministic: the samples in order, each batch's augmentation seeded
from ``(run.seed, batch, EVAL_BATCH_STREAM)`` and torch's global generator (the Poisson encoder) from ``(run.seed,
batch, EVAL_GLOBAL_STREAM)``.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from sparsesnn.core.errors import DatasetError
from sparsesnn.data import DatasetInfo
from sparsesnn.data.base import label_problem
from sparsesnn.metrics import FiringRateMonitor, SynapticOpsMonitor, correct_count
from sparsesnn.train.batching import (
    EVAL_BATCH_STREAM,
    EVAL_GLOBAL_STREAM,
    BatchSeed,
    derive_seed,
    epoch_order,
    loader_batches,
    to_time_major,
)
from sparsesnn.train.config import Config
from sparsesnn.train.losses import LossFn
from sparsesnn.train.step import autocast


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    config: Config,
    info: DatasetInfo,
    encoder: nn.Module,
    loss_fn: LossFn,
    device: torch.device,
    split: str = "test",
    monitors: bool = True,
) -> dict[str, Any]:
    """Loss and accuracy of ``model`` (put in eval mode) on ``dataset`` as ``{split}_loss`` / ``{split}_acc``, read
    in ``data.eval_batch_size`` batches with the run's loader settings and run under ``run.precision``; with
    ``monitors`` also the firing rates and per-sample synaptic operations of that pass.

    ``sops`` are effective accumulates (spikes x live fan-out), ``macs`` the analog first layer's
    multiply-accumulates, ``dense_ops`` every synapse at every step; ``energy_uJ`` = 0.9 pJ x sops + 4.6 pJ x macs.
    ``monitors=False`` (the validation pass) skips the hooks that count them.
    """
    seed = config.run.seed
    model.eval()
    monitor = FiringRateMonitor(model) if monitors else None
    ops = SynapticOpsMonitor(model) if monitors else None
    loss_sum, correct, seen = 0.0, 0, 0
    order = epoch_order(len(dataset), seed, 0, shuffle=False)  # type: ignore[arg-type]
    batches = loader_batches(
        dataset,
        order,
        config.data.eval_batch_size,
        0,
        BatchSeed((seed,), (EVAL_BATCH_STREAM,)),
        device=device,
        num_workers=config.data.num_workers,
        pin_memory=config.data.pin_memory,
    )
    with ExitStack() as hooks:
        if monitor is not None and ops is not None:
            hooks.enter_context(monitor.active())
            hooks.enter_context(ops.active())
        for b, idx, x, y in batches:
            problem = label_problem(y, idx, info)  # on the host copy: no synchronisation
            if problem is not None:
                raise DatasetError(f"dataset {info.name!r}, {split} split: {problem}; fix the data")
            torch.manual_seed(derive_seed(seed, b, EVAL_GLOBAL_STREAM))
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, config.run.precision):
                out = model(to_time_major(x, info, encoder))
                loss = loss_fn(out, y)
            n = int(y.shape[0])
            loss_sum += float(loss) * n
            correct += correct_count(out, y)
            seen += n
    result: dict[str, Any] = {f"{split}_loss": loss_sum / max(seen, 1), f"{split}_acc": correct / max(seen, 1)}
    if monitor is not None and ops is not None:
        counted = ops.result(max(seen, 1))
        result |= {
            "firing_rate": monitor.mean_rate(),
            "firing_rates": monitor.rates(),
            "sops": counted["Effective_ACs"],
            "macs": counted["Effective_MACs"],
            "dense_ops": counted["Dense"],
            "energy_uJ": counted["energy_uJ"],
        }
    return result
