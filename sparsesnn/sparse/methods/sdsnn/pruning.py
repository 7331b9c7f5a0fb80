"""Mechanism 2: neuronal pruning with the adaptive (neurotrophic) rate (``neuron_pruning``), for ``e > 2N``.

A neuron's score is the sum over its fan-in of the min-max-normalised range width ``unit(r+ + |r-|) * M``
(:func:`neuron_scores`; ``unit`` over the whole layer, 0.5 everywhere when all widths are equal). The
``floor(rho_l * n_l)`` lowest-scoring neurons of the layer (:func:`prune_count`; already pruned ones included: they
score lowest) are the pruned set, so ``rho_l`` is the layer's cumulative target; the ones among them that were never
pruned before are pruned now (:func:`select`; stable sort: ties go to the lower index). Right after a layer is pruned
its rate moves, in percentage points as in the code: ``rho_l += exp(-(e - 2N - 1) / 5) * alive_l / alive_{l+1} /
100`` from ``rho_l = 0.5 %`` (the learner's ``rate_increment``; the last neuron-pruned layer follows the code's FC
schedule by default); ``alive`` counts the neurons with at least ``threshold`` surviving input synapses
(:func:`alive_neurons`, :func:`dead_threshold`), and ``alive_{l+1}`` is read before layer ``l+1`` is pruned in the
same epoch (the code walks the layers in order).

Scores are summed in float64 as in the code's numpy arrays, so that neurons whose fan-in widths are the same
multiset (common: ranges start equal and shrink by exact factors) tie as they do there rather than being ordered by
float32 rounding; ties go to the lower index (the code's ``torch.argsort`` is not stable).
"""

from __future__ import annotations

import math

import torch

from sparsesnn.sparse.methods.sdsnn.tensors import is_conv


def unit(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation to [0, 1] over the whole tensor; 0.5 everywhere when it is constant (code: ``unit``)."""
    lo, hi = x.min(), x.max()
    if bool(hi == lo):
        return torch.full_like(x, 0.5)
    return ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)


def neuron_scores(r: dict[str, torch.Tensor], s: torch.Tensor) -> torch.Tensor:
    """Sum over each neuron's fan-in of ``unit(r+ + |r-|) * M`` for ranges ``r`` and structure ``s``, in float64."""
    width = unit(r["pos"].double() + r["neg"].double().abs()) * s
    return width.reshape(s.shape[0], -1).sum(1)


def prune_count(n_out: int, rho: float) -> int:
    """How many of a layer's ``n_out`` neurons the rate ``rho`` prunes: ``floor(n_out * rho)``, never all."""
    return min(math.floor(n_out * rho + 1e-9), n_out - 1)


def dead_threshold(weight: torch.Tensor, conv_ratio: float, fc_ratio: float) -> float:
    """Fewer surviving input synapses than this and a neuron counts as dead (``ratio * fan_in``)."""
    ratio = conv_ratio if is_conv(weight) else fc_ratio
    return ratio * weight[0].numel()


def input_counts(s: torch.Tensor) -> torch.Tensor:
    """Each neuron's surviving input synapses in the structure ``s``."""
    return s.reshape(s.shape[0], -1).sum(1)


def alive_neurons(s: torch.Tensor, alive: torch.Tensor, threshold: float) -> int:
    """Neurons that are not pruned and keep at least ``threshold`` input synapses (and at least one)."""
    counts = input_counts(s)
    return int((alive & (counts >= threshold) & (counts > 0)).sum())


def dead_neurons(s: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per neuron of the structure ``s``: fewer than ``threshold`` input synapses, or none."""
    counts = input_counts(s)
    return (counts < threshold) | (counts == 0)


def select(
    scores: torch.Tensor | None,
    count: int,
    alive: torch.Tensor,
    ever_pruned: torch.Tensor,
    dead: torch.Tensor | None = None,
) -> torch.Tensor:
    """The neurons to prune now: those among the ``count`` lowest ``scores`` never pruned before, plus the ``dead``
    ones where given (``prune_dead``), of the ``alive`` ones. ``scores`` may be None when ``count`` is 0."""
    kill = torch.zeros_like(alive)
    if count > 0:
        assert scores is not None
        lowest = torch.argsort(scores, stable=True)[:count]
        kill[lowest] = True
        kill &= ~ever_pruned
    if dead is not None:
        kill |= alive & dead
    kill &= alive
    return kill
