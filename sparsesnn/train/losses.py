"""Training objectives on time-major model output ``[T, B, classes]``.

- ``ce``: cross-entropy on the time-averaged output, ``CE(mean_t z[t], y)`` (the usual readout of direct-trained
  SNNs, e.g. Fang et al. 2021).
- ``mse``: mean squared error between the firing rate ``mean_t s[t]`` of spiking output neurons and the one-hot
  target, ``mean((r - onehot(y))^2)`` (SD-SNN, BrainCog's ``UnilateralMse``-free variant).
- ``tet``: temporal efficient training (Deng et al., ICLR 2022): a cross-entropy at every time step plus a small
  MSE pull of the outputs towards a constant (:func:`tet_loss`).

Every objective is a mean over the batch, so a loss value does not depend on the batch size. Whatever objective
trains, the prediction (``metrics.correct_count``) is the argmax of the time-averaged output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: the losses :func:`build_loss` knows (``loss.name`` in a config)
LOSSES = ("ce", "mse", "tet")

#: TET's ``lambda``, the weight of the MSE term: ``--lamb`` defaults to ``1e-3`` in the authors'
#: ``main_training_parallel.py`` (Gus-Lab, now brain-intelligence-lab/temporal_efficient_training, lines 70-71, the
#: same since the first commit, 2022-02). Their other script, ``main_training_distribute.py``, had ``0.0`` and since
#: 2024-08 has ``1e-4``: the code has no single value, and we take the one that never changed.
TET_LAMBDA = 1e-3
#: TET's ``phi`` (the code's ``means``), the constant the MSE term pulls every output towards: ``--means 1.0`` in both
#: of the authors' training scripts (``main_training_parallel.py`` line 60-61), the firing threshold ``V_th = 1`` of
#: their neurons
TET_TARGET = 1.0


def mean_over_time(output: torch.Tensor) -> torch.Tensor:
    """``[T, B, C] -> [B, C]``; 2-d output (a non-temporal model) passes through."""
    return output.mean(0) if output.dim() == 3 else output


def cross_entropy_on_mean(label_smoothing: float = 0.0) -> LossFn:
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(mean_over_time(output), target, label_smoothing=label_smoothing)

    return loss


def mse_on_rates(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    rates = mean_over_time(output)
    return F.mse_loss(rates, F.one_hot(target, rates.shape[-1]).to(rates.dtype))


def tet_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    lam: float = TET_LAMBDA,
    phi: float = TET_TARGET,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The TET objective (Deng et al., "Temporal Efficient Training of Spiking Neural Network via Gradient
    Re-weighting", ICLR 2022, arXiv 2202.11946, the method section: the TET loss and its MSE regulariser; we could not
    read the text here to give the section number) on time-major output ``O`` of shape ``[T, B, C]``::

        L_TET = 1/T sum_t CE(O(t), y)                 cross-entropy at every step (mean over the batch)
        L_MSE = 1/T sum_t MSE(O(t), phi)              every output pulled towards the constant phi (mean over B, C)
        L     = (1 - lam) L_TET + lam L_MSE

    As the authors' ``TET_loss`` (``functions.py`` lines 39-51 of Gus-Lab/temporal_efficient_training, now
    brain-intelligence-lab/temporal_efficient_training): an unweighted ``nn.CrossEntropyLoss`` per step averaged over
    the steps, and one ``nn.MSELoss`` over all of ``O`` against a tensor filled with ``phi`` (the code's ``means``),
    which is the mean of the per-step MSEs. Their code steps over dim 1 of batch-major ``[B, T, C]`` output; ours is
    time-major. Defaults :data:`TET_LAMBDA` (``1e-3``) and :data:`TET_TARGET` (``1.0``) are that code's.
    ``label_smoothing`` (not in their code) smooths each step's cross-entropy.

    Low-precision output (bf16 / fp16, from autocast) is promoted to float32 before the reductions, so the loss and its
    gradient are float32 sums; float32 and float64 output are used as they are. The prediction stays the argmax of
    the time-averaged output, as in the authors' code (``outputs.mean(1)`` there).

    Raises:
        ValueError: ``output`` is not 3-d (TET needs one output per time step), or ``target`` is not ``[B]``.
    """
    if output.dim() != 3:
        raise ValueError(
            f"the TET loss needs time-major per-step output [T, B, classes], got shape {tuple(output.shape)}: "
            "a model that returns one output per sample cannot train with loss.name = 'tet'"
        )
    steps, batch, classes = output.shape
    if target.shape != (batch,):
        raise ValueError(
            f"target must have shape [{batch}] for output {tuple(output.shape)}, got {tuple(target.shape)}"
        )
    out = output.to(torch.promote_types(output.dtype, torch.float32))
    # mean over the T*B (step, sample) pairs = 1/T sum_t of each step's batch mean; rows are step-major
    per_step_ce = F.cross_entropy(
        out.reshape(steps * batch, classes), target.repeat(steps), label_smoothing=label_smoothing
    )
    if lam == 0.0:
        return per_step_ce
    mse = (out - phi).square().mean()  # = 1/T sum_t MSE(O(t), phi)
    return (1.0 - lam) * per_step_ce + lam * mse


def temporal_efficient(lam: float = TET_LAMBDA, phi: float = TET_TARGET, label_smoothing: float = 0.0) -> LossFn:
    """:func:`tet_loss` with its settings bound, as a ``loss_fn(output, target)``."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"TET lambda must be in [0, 1], got {lam}")

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tet_loss(output, target, lam=lam, phi=phi, label_smoothing=label_smoothing)

    return loss


def build_loss(
    name: str,
    label_smoothing: float = 0.0,
    *,
    tet_lambda: float | None = None,
    tet_target: float | None = None,
) -> LossFn:
    """The loss ``name`` (one of :data:`LOSSES`). ``tet_lambda`` / ``tet_target`` (None = :data:`TET_LAMBDA` /
    :data:`TET_TARGET`) belong to ``tet`` only; given with another loss they are an error, not ignored."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
    if name != "tet":
        for key, value in (("tet_lambda", tet_lambda), ("tet_target", tet_target)):
            if value is not None:
                raise ValueError(f"{key} applies to the 'tet' loss only, not to {name!r}")
    if name == "ce":
        return cross_entropy_on_mean(label_smoothing)
    if name == "mse":
        return mse_on_rates
    return temporal_efficient(
        TET_LAMBDA if tet_lambda is None else tet_lambda,
        TET_TARGET if tet_target is None else tet_target,
        label_smoothing,
    )
