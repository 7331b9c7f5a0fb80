"""Mechanism 1: dendritic-spine ranges and the synaptic constraint (``range_layers``, ``constraint``).

At ``e = 0`` every synapse of a layer gets the range ``r+ = max(W_layer)``, ``r- = -max(W_layer)``
(:func:`init_ranges`). From ``e = 1`` on, on the masked weights ``W * M`` (:func:`move_ranges`): a synapse with
``w >= r+`` at this epoch *and* the previous one adds 1 to ``n+`` and ``w - r+`` to ``s+`` (otherwise both restart
at 0); at ``n+ >= N``, ``r+ += s+ / N`` and the counters restart. The mirror (``w <= r-``, ``n-``, ``s-``) moves
``r-``. A synapse with ``|w|`` smaller than at the previous epoch, at this epoch and the previous one, adds 1 to
``n0``; at ``n0 >= N``, ``r+ *= 0.75`` and ``r- *= 0.75`` (``shrink``). So a range moves after ``N + 1`` epochs
running beyond it. For ``e > N`` the constraint clips every weight into its range, ``w = max(min(w, r+), r-)`` (the
code's order; :func:`constrain`).

Only the layers whose ranges move (``range_layers``) keep the counters (:func:`init_dynamics`); the others keep their
``e = 0`` ranges, which are still clipped to and scored by. Ranges are kept in the weights' dtype; the per-synapse
state of a layer with range dynamics (ranges, counters, previous values) costs about 30 bytes per synapse, on the
weights' device, and is saved in every checkpoint.
"""

from __future__ import annotations

import torch

from sparsesnn.sparse.methods.sdsnn.tensors import COUNT


def init_ranges(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ``e = 0`` ranges of a layer's masked weights ``w``: ``pos = max(w)``, ``neg = -max(w)`` everywhere."""
    top = w.max()
    return {"pos": torch.full_like(w, float(top)), "neg": torch.full_like(w, -float(top))}


def init_dynamics(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Zeroed counters of a layer whose ranges move, and ``|w|`` as the previous epoch's magnitudes."""
    z = torch.zeros(w.shape, dtype=COUNT, device=w.device)
    b = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    return {
        "n_pos": z.clone(), "s_pos": torch.zeros_like(w), "prev_pos": b.clone(),
        "n_neg": z.clone(), "s_neg": torch.zeros_like(w), "prev_neg": b.clone(),
        "n_dec": z.clone(), "prev_dec": b.clone(), "w_prev": w.abs(),
    }  # fmt: skip


def move_ranges(
    w: torch.Tensor, r: dict[str, torch.Tensor], d: dict[str, torch.Tensor], n: int, shrink: float
) -> tuple[int, int]:
    """One epoch of range dynamics for a layer's masked weights ``w``: updates the ranges ``r`` and the counters
    ``d`` in place; returns ``(grown, shrunk)``, how many ranges grew (either side) and how many shrank."""
    grown = shrunk = 0
    for side, beyond in (("pos", w >= r["pos"]), ("neg", w <= r["neg"])):
        running = beyond & d[f"prev_{side}"]
        d[f"n_{side}"] = torch.where(running, d[f"n_{side}"] + 1, 0).to(COUNT)
        d[f"s_{side}"] = torch.where(running, d[f"s_{side}"] + (w - r[side]), 0.0)
        hit = d[f"n_{side}"] >= n
        r[side] += torch.where(hit, d[f"s_{side}"] / n, 0.0)
        d[f"n_{side}"].masked_fill_(hit, 0)
        d[f"s_{side}"].masked_fill_(hit, 0.0)
        d[f"prev_{side}"] = beyond
        grown += int(hit.sum())
    aw = w.abs()
    decreasing = aw < d["w_prev"]
    running = decreasing & d["prev_dec"]
    d["n_dec"] = torch.where(running, d["n_dec"] + 1, 0).to(COUNT)
    hit = d["n_dec"] >= n
    factor = torch.where(hit, shrink, 1.0).to(w.dtype)
    r["pos"] *= factor
    r["neg"] *= factor
    d["n_dec"].masked_fill_(hit, 0)
    d["prev_dec"] = decreasing
    d["w_prev"] = aw
    shrunk += int(hit.sum())
    return grown, shrunk


def constrain(w: torch.Tensor, r: dict[str, torch.Tensor]) -> int:
    """Clip the weight ``w`` in place into its ranges; returns how many weights were outside them."""
    clipped = int(((w > r["pos"]) | (w < r["neg"])).sum())
    w.copy_(torch.maximum(torch.minimum(w, r["pos"]), r["neg"]))
    return clipped
