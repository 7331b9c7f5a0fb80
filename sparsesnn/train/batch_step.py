"""The training step on one batch: seed, shard, forward and backward, one host synchronisation, the global sums, the
NaN check, the optimiser step.

:class:`BatchStep` is what the trainer's epoch loop calls for every batch; the loop keeps the LR schedule, the
structure learner, the epoch's running sums, checkpoints and stop signals.

* Check the labels: integer labels outside ``[0, classes)`` stop the run before anything runs
  (:class:`~sparsesnn.core.errors.DatasetError` naming the dataset and the sample). One min/max over the batch's
  labels on the host copy, before the transfer: microseconds, no device synchronisation.
* Seed: torch's global generator (dropout) from ``(run.seed, epoch, batch, TRAIN_GLOBAL_STREAM)``, so a run resumed
  at any batch draws what an unbroken one draws.
* Shard: with several processes every rank holds the same global batch and takes its slice of it.
* Forward and loss under ``run.precision`` (:class:`~sparsesnn.train.step.TrainStep`), against the labels or through
  the distiller; the backward pass is queued first, then loss and accuracy are read in one transfer while the device
  works.
  The same transfer carries two flags, each one reduction queued on the device: whether the batch's inputs are all
  finite (``isfinite(x).all()``, one read of the batch, less than the first layer's own read of it), and whether the
  previous optimiser step left every weight finite (``_foreach_norm`` over the parameters, queued right after that
  step: one read of the weights, about a seventh of what an Adam step moves). No synchronisation is added.
* One small all-reduce (several processes only) sums loss, correct predictions, samples, the non-finite flags and
  the stop flag, so every rank stops at the same step.
* Non-finite inputs on any rank raise :class:`~sparsesnn.core.errors.DatasetError` (naming the dataset and the
  sample); weights made non-finite by the previous step, or a non-finite loss, raise
  :class:`~sparsesnn.core.errors.TrainingDivergedError`. All three before the optimiser changes anything, so the
  last checkpoint is the last good state; otherwise the optimiser steps. :meth:`BatchStep.check_weights` reads the
  last step's weight flag at once (the trainer calls it before every checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsesnn.core.collectives import all_reduce_sum
from sparsesnn.core.errors import DatasetError, TrainingDivergedError
from sparsesnn.data import DatasetInfo
from sparsesnn.data.base import label_problem, non_finite_sample
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
    #: the last optimiser step's "every weight finite" flag (a device tensor, read at the next synchronisation) and
    #: its position (epoch, batch, global step)
    _weights_ok: torch.Tensor | None = field(default=None, init=False, repr=False)
    _weights_at: tuple[int, int, int] = field(default=(0, 0, 0), init=False, repr=False)

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
        problem = label_problem(y, idx, self.info)  # the whole global batch, on the host, before anything runs
        if problem is not None:
            raise DatasetError(self._data_message(problem, epoch, batch))
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
        # the step's one host synchronisation, while the device runs the backward pass: loss and accuracy, whether
        # the inputs and the weights the forward pass used were finite, read before the optimiser changes anything
        weights_ok = self._weights_ok if self._weights_ok is not None else torch.ones((), device=loss.device)
        inputs_ok = torch.isfinite(x).all() if x.is_floating_point() else torch.ones((), device=loss.device)
        loss_value, correct_value, inputs_finite, weights_finite = torch.stack(
            [
                loss.detach().float(),
                correct_tensor(out.detach(), y).float(),
                inputs_ok.float().to(loss.device),
                weights_ok.float().to(loss.device),
            ]
        ).tolist()
        self._weights_ok = None
        # one small all-reduce per step (several processes only): global loss, accuracy, NaN and stop flags
        loss_sum, correct, seen, bad, bad_inputs, bad_weights, stop = all_reduce_sum(
            [
                loss_value * n,
                correct_value,
                float(n),
                float(not math.isfinite(loss_value)),
                float(not inputs_finite),
                float(not weights_finite),
                float(stop_requested),
            ]
        )
        if bad_inputs:
            sample = non_finite_sample(x, idx)
            what = f"sample {sample} holds" if sample is not None else "a sample of another process's share holds"
            raise DatasetError(
                self._data_message(f"{what} non-finite input values (NaN or infinity)", epoch, batch)
                + " (or its transform)"
            )
        if bad_weights:
            self._weights_diverged(weights_finite)
        if bad:
            raise TrainingDivergedError(
                f"loss became {loss_value if not math.isfinite(loss_value) else 'nan on another rank'} at "
                f"epoch {epoch + 1}, batch {batch + 1} (step {global_step + 1}); stopped. {self.last_checkpoint()} "
                "Try a lower optim.lr or optim.grad_clip."
            )
        self.step.apply()
        self._weights_ok = self._all_finite()
        self._weights_at = (epoch, batch, global_step)
        return BatchOutcome(loss_sum, int(correct), int(seen), bool(stop))

    def _data_message(self, problem: str, epoch: int, batch: int) -> str:
        return (
            f"dataset {self.info.name!r}, training split: {problem} (epoch {epoch + 1}, batch {batch + 1}); stopped "
            "before the optimiser step. Fix the data"
        )

    def _all_finite(self) -> torch.Tensor | None:
        """A device flag, queued without synchronising: every trained parameter is finite (the norm of a tensor
        with NaN or infinity is not finite; a finite weight's square never overflows float32 in practice)."""
        params = [p for g in self.step.optimizer.param_groups for p in g["params"] if p.is_floating_point()]
        if not params:
            return None
        with torch.no_grad():
            norms = torch._foreach_norm([p.detach() for p in params])
            return torch.isfinite(torch.stack([v.float() for v in norms]).sum())

    def check_weights(self) -> None:
        """Raise :class:`TrainingDivergedError` when the last optimiser step left a weight NaN or infinite (one
        synchronisation; the trainer calls it before writing a checkpoint)."""
        if self._weights_ok is None:
            return
        ok = bool(self._weights_ok)
        total = all_reduce_sum([float(not ok)])[0]
        if total:
            self._weights_diverged(1.0 if ok else 0.0)
        self._weights_ok = None

    def _weights_diverged(self, here: float) -> None:
        epoch, batch, step = self._weights_at
        where = "" if not here else " on another rank"
        raise TrainingDivergedError(
            f"weights became non-finite (NaN or infinity){where} after the optimiser step at epoch {epoch + 1}, "
            f"batch {batch + 1} (step {step + 1}); stopped. {self.last_checkpoint()} Try a lower optim.lr or "
            "optim.grad_clip."
        )
