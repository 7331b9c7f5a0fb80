"""Mechanism 3: synaptic regeneration (``regeneration``), for ``e > 2N``, before the pruning of that epoch.

Pruned synapses keep learning during the epoch (:mod:`.ghosts`). A conv *kernel* (all of its ``k*k`` entries
absent) or an FC *synapse* is a candidate when its re-learned value — the signed sum of the kernel, or the weight —
exceeds the percentile ``q_e = min(65 + g^(e - 2N - 1), 99)`` (FC: ``60 + ...``; :func:`percentile_at`) of the same
values over the whole layer, live ones included. A candidate at this check *and* the previous one adds 1 to its
counter (otherwise 0); when the counter exceeds ``N`` (the code's strict ``>``) the kernel / synapse is regrown with
its re-learned value: ``N + 2`` epochs running above the percentile (:func:`regrow`). A regrown kernel of a pruned
neuron revives that neuron (with only the regrown kernels); a neuron once pruned is never pruned again by the rate
(the code's ``his_prun``), though it counts towards the lowest-scoring set.

The growth ``g`` is ``1.1^(18 / N)`` by default (``percentile_growth``), the code's 1.1 at its ``N = 18``, so that
the percentile reaches its cap the same number of N-units after ``2N + 1`` at any ``N``. Percentiles are taken in
the weights' dtype with numpy's linear interpolation (:func:`percentile`).
"""

from __future__ import annotations

import math

import torch

from sparsesnn.sparse.methods.sdsnn.tensors import COUNT, is_conv, kernel_view


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``numpy.percentile(values, q)`` (linear interpolation) for a tensor of any size (``torch.quantile`` refuses
    more than 2^24 elements; the DVS net's hidden FC has 67 M)."""
    flat = values.reshape(-1)
    n = flat.numel()
    pos = q / 100.0 * (n - 1)
    lo = min(math.floor(pos), n - 1)
    low = flat.kthvalue(lo + 1).values
    frac = pos - lo
    if frac <= 0.0 or lo + 1 >= n:
        return low
    high = flat.kthvalue(lo + 2).values
    return low + (high - low) * frac


def percentile_at(base: float, growth: float, cap: float, k: int) -> float:
    """``min(base + growth^k, cap)``: the regeneration percentile ``k = e - 2N - 1`` epochs into development."""
    return min(base + growth**k, cap)


def new_state(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Zeroed counters and 'candidate at the previous check' flags, one per kernel (conv) or synapse (FC)."""
    return {"count": torch.zeros(values.shape, dtype=COUNT, device=values.device),
            "prev": torch.zeros(values.shape, dtype=torch.bool, device=values.device)}  # fmt: skip


def candidate_values(w: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, pruned)``: the signed kernel sums and fully absent kernels of a conv, the weights and absent
    synapses of an FC layer (weight ``w``, structure ``s``)."""
    if is_conv(w):
        return kernel_view(w).sum(-1), ~kernel_view(s).any(-1)
    return w, ~s


def regrow(
    values: torch.Tensor,
    pruned: torch.Tensor,
    q: float | None,
    state: dict[str, torch.Tensor],
    s: torch.Tensor,
    alive: torch.Tensor,
    n: int,
) -> int:
    """One regeneration check of a layer (:func:`candidate_values` ``values`` and ``pruned``; ``q`` the percentile,
    None when nothing is pruned): updates the counters ``state``, and the structure ``s`` and the neurons ``alive``
    with what regrows, in place; returns how many kernels / synapses regrew."""
    if q is not None:
        candidates = (values > percentile(values, q)) & pruned
    else:
        candidates = torch.zeros_like(pruned)
    running = candidates & state["prev"]
    state["count"] = torch.where(running, state["count"] + 1, 0).to(COUNT)
    grow = state["count"] > n
    state["count"].masked_fill_(grow, 0)
    state["prev"] = candidates
    grown = int(grow.sum())
    if grown:
        grow_w = grow.unsqueeze(-1).expand(*grow.shape, kernel_view(s).shape[-1]) if is_conv(s) else grow
        s |= grow_w.reshape(s.shape)
        alive |= grow_w.reshape(s.shape[0], -1).any(1)
    return grown
