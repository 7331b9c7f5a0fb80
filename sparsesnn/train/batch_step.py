"""The training step on one batch: seed, shard, forward and backward, one host synchronisation, the global sums, the
NaN check, the optimiser step.

:class:`BatchStep` is what the trainer's epoch loop calls for every batch; the loop keeps the LR schedule, the
structure learner, the epoch's running sums, checkpoints and stop signals.

* Seed: torch's global generator (dropout) from ``(run.seed, epoch, batch, TRAIN_GLOBAL_STREAM)``, so a run resumed
  at any batch draws what an unbroken one draws.
* Shard: with several processes every rank holds the same global batch and takes its slice of it.
* Forward and loss under ``run.precision`` (:class:`~sparsesnn.train.step.TrainStep`), against the labels or through
  the distiller; the backward pass is queued first, then loss and accuracy are read in one transfer while the device
  works.
* One small all-reduce (several processes only) sums loss, correct predictions, samples, a non-finite-loss flag and
  the stop flag, so every rank stops at the same step.
* A non-finite loss on any rank raises :class:`~sparsesnn.core.errors.TrainingDivergedError` before the optimiser
  changes anything; otherwise the optimiser steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparsesnn.core.collectives import all_reduce_sum
from sparsesnn.core.errors import TrainingDivergedError
from sparsesnn.data import DatasetInfo
from sparsesnn.metrics import correct_tensor
from sparsesnn.train.batching import TRAIN_GLOBAL_STREAM, derive_seed, to_time_major
from sparsesnn.train.distill import Distiller
from sparsesnn.train.distributed import DistContext
from sparsesnn.train.losses import LossFn
from sparsesnn.train.step import TrainStep


@dataclass
class BatchOutcome:
    """What one step on one global batch gave, summed over the processes."""

    loss_sum: float  # the loss times the samples
    correct: int
    seen: int
    stop: bool  # some process was asked to stop (Ctrl-C, SIGTERM, SIGUSR1)


@dataclass
class BatchStep:
    """One optimiser step on one global batch (see the module docstring)."""

    step: TrainStep
    info: DatasetInfo
    encoder: nn.Module
    loss_fn: LossFn
    distiller: Distiller | None
    dist: DistContext
    device: torch.device
    seed: int  # run.seed
    #: where the last good checkpoint is, in words, for the divergence error
    last_checkpoint: Callable[[], str]

    def __call__(
        self,
        epoch: int,
        batch: int,
        idx: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        global_step: int,
        stop_requested: bool,
    ) -> BatchOutcome:
        """Train on batch ``batch`` of epoch ``epoch`` (0-based; ``global_step`` optimiser steps done before it);
        ``stop_requested``: this process was asked to stop, to be shared with the others."""
        torch.manual_seed(derive_seed(self.seed, epoch, batch, TRAIN_GLOBAL_STREAM))
        if self.dist.enabled:  # this rank's share of the global batch
            idx, x, y = (t.tensor_split(self.dist.world_size)[self.dist.rank] for t in (idx, x, y))
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with self.step.autocast():
            model_in = to_time_major(x, self.info, self.encoder)
            out = self.step.forward(model_in)
            if self.distiller is not None:
                loss = self.distiller.loss(out, y, x, model_in, idx)
            else:
                loss = self.loss_fn(out, y)
        n = int(y.shape[0])
        self.step.backward(loss)
        # the step's one host synchronisation, while the device runs the backward pass: loss and accuracy, read
        # before the optimiser changes anything
        loss_value, correct_value = torch.stack([loss.detach().float(), correct_tensor(out.detach(), y)]).tolist()
        # one small all-reduce per step (several processes only): global loss, accuracy, NaN and stop flags
        loss_sum, correct, seen, bad, stop = all_reduce_sum(
            [loss_value * n, correct_value, float(n), float(not math.isfinite(loss_value)), float(stop_requested)]
        )
        if bad:
            raise TrainingDivergedError(
                f"loss became {loss_value if not math.isfinite(loss_value) else 'nan on another rank'} at "
                f"epoch {epoch + 1}, batch {batch + 1} (step {global_step + 1}); stopped. {self.last_checkpoint()} "
                "Try a lower optim.lr or optim.grad_clip."
            )
        self.step.apply()
        return BatchOutcome(loss_sum, int(correct), int(seen), bool(stop))
