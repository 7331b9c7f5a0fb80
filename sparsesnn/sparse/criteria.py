"""Prune and grow criteria: which active synapses to drop, which absent ones to (re)connect.

A criterion takes the layer's weight, the set of candidate positions (``candidates``: active synapses for pruning,
absent ones for growth), the number ``n`` to pick and a :class:`CriterionContext`, and returns a bool mask with
exactly ``n`` True entries, all inside ``candidates``. Two registries, :data:`PRUNE` and :data:`GROW`, map names to
criteria; a method can register its own with ``@PRUNE.register("name")``.

Prune: ``magnitude`` (smallest ``|w|``, Han et al. 2015; RigL), ``set`` (SET, Mocanu et al. 2018: the smallest
positive and the largest negative weights, half each), ``random``.
Grow: ``gradient`` (largest ``|dL/dW|`` of absent synapses, RigL, Evci et al. 2020), ``momentum`` (largest
``|m|`` of a momentum of dense gradients, Sparse Momentum, Dettmers & Zettlemoyer 2019), ``random`` (SET).

At a coarse granularity (:mod:`sparsesnn.sparse.granularity`) the same criteria pick whole groups: the rewiring
learner calls them on group-shaped tensors, ``weight = sum_{group} |w|``, ``dense_grad = sum_{group} |g|``,
``momentum = sum_{group} |m|`` and group-shaped candidates, so ``magnitude`` drops the groups of smallest L1 norm,
``gradient`` / ``momentum`` grow those of largest summed ``|g|`` / ``|m|``, and ``random`` draws one score per group.
A criterion that reads the sign of single weights has no meaning on such sums: the names in :data:`SIGNED` are
refused at a coarse granularity (a criterion registered elsewhere that reads signs must be added there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sparsesnn.core.registry import Registry


@dataclass
class CriterionContext:
    """What a criterion may look at besides the weight: the dense gradient, a dense momentum, a seeded generator."""

    generator: torch.Generator
    dense_grad: torch.Tensor | None = None
    momentum: torch.Tensor | None = None


Criterion = Callable[[torch.Tensor, torch.Tensor, int, CriterionContext], torch.Tensor]
PRUNE: Registry[Criterion] = Registry("prune criterion")
GROW: Registry[Criterion] = Registry("grow criterion")
#: criteria that read the sign of single weights: defined at ``weight`` granularity only
SIGNED: frozenset[str] = frozenset({"set"})


def pick_lowest(scores: torch.Tensor, candidates: torch.Tensor, n: int) -> torch.Tensor:
    """Bool mask of the ``n`` candidates with the lowest score (ties broken by position)."""
    return pick_highest(-scores, candidates, n)


def pick_highest(scores: torch.Tensor, candidates: torch.Tensor, n: int) -> torch.Tensor:
    """Bool mask of the ``n`` candidates with the highest score (ties broken by position)."""
    available = int(candidates.sum())
    if n > available:
        raise ValueError(f"asked to pick {n} synapses but only {available} are candidates")
    out = torch.zeros(candidates.shape, dtype=candidates.dtype, device=candidates.device)  # contiguous, any layout in
    if n <= 0:
        return out
    masked = torch.where(candidates, scores, torch.full_like(scores, float("-inf"))).flatten()
    idx = torch.topk(masked, n, sorted=False).indices
    out.view(-1)[idx] = True
    return out


def random_scores(shape: torch.Size, ctx: CriterionContext, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=ctx.generator).to(device)


@PRUNE.register("magnitude")
def prune_magnitude(weight: torch.Tensor, candidates: torch.Tensor, n: int, ctx: CriterionContext) -> torch.Tensor:
    return pick_lowest(weight.detach().abs(), candidates, n)


@PRUNE.register("set")
def prune_set(weight: torch.Tensor, candidates: torch.Tensor, n: int, ctx: CriterionContext) -> torch.Tensor:
    """SET: drop the weights closest to zero on each side, half from the positives, half from the negatives.

    When one side has too few candidates the rest comes from the other side.
    """
    w = weight.detach()
    positive = candidates & (w > 0)
    negative = candidates & ~(w > 0)
    n_pos = min(n - n // 2, int(positive.sum()))
    n_neg = min(n - n_pos, int(negative.sum()))
    n_pos = n - n_neg
    return pick_lowest(w, positive, n_pos) | pick_highest(w, negative, n_neg)


@PRUNE.register("random")
def prune_random(weight: torch.Tensor, candidates: torch.Tensor, n: int, ctx: CriterionContext) -> torch.Tensor:
    return pick_highest(random_scores(weight.shape, ctx, weight.device), candidates, n)


@GROW.register("gradient")
def grow_gradient(weight: torch.Tensor, candidates: torch.Tensor, n: int, ctx: CriterionContext) -> torch.Tensor:
    if ctx.dense_grad is None:
        raise RuntimeError("gradient growth needs the dense gradient, but none was captured on this step")
    return pick_highest(ctx.dense_grad.abs(), candidates, n)


@GROW.register("momentum")
def grow_momentum(weight: torch.Tensor, candidates: torch.Tensor, n: int, ctx: CriterionContext) -> torch.Tensor:
    if ctx.momentum is None:
        raise RuntimeError("momentum growth needs a dense-gradient momentum, but none is tracked")
    return pick_highest(ctx.momentum.abs(), candidates, n)


@GROW.register("random")
def grow_random(weight: torch.Tensor, candidates: torch.Tensor, n: int, ctx: CriterionContext) -> torch.Tensor:
    return pick_highest(random_scores(weight.shape, ctx, weight.device), candidates, n)
