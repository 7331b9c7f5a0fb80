"""The PQ index of a weight vector and the retained-weight bound it implies (Diao et al., ICLR 2023).

For a vector ``w`` with ``d`` active entries and ``0 < p < q``::

    I_pq(w) = 1 - d^(1/q - 1/p) * ||w||_p / ||w||_q                      (I = 0 when d = 0)

``I`` measures sparsity (compressibility): ``0 <= I <= 1 - d^(1/q - 1/p)``; ``I = 0`` exactly when every active
entry has the same magnitude, and ``I`` reaches its maximum ``1 - d^(1/q - 1/p)`` when all the mass sits on one
entry (a one-hot vector among ``d`` active entries); it is invariant to scaling and to permutation, and it grows
when mass moves to the large entries or when active zeros are added. The number of entries worth keeping is
bounded by::

    r = ceil( d * (1 + a_r)^(-q/(q-p)) * (1 - I)^(q*p/(q-p)) )

and the pruning (rewiring) ratio of a unit is ``c = clamp(gamma * (1 - r/d), 0, beta)``: ``floor(c * d)`` entries
of smallest magnitude go.

Checked against Diao's public code, ``diaoenmao/Pruning-Deep-Neural-Networks-from-a-Sparsity-Perspective``:

- ``src/modules/sparsity_index.py`` ``SparsityIndex.make_si``: ``d`` is the mask's count along ``dim``; the norms are
  ``torch.linalg.norm`` of the masked weights (absent entries are 0 so they add nothing) and
  ``si = (||x||_q - d^(1/q-1/p) ||x||_p) / ||x||_q`` -- the formula above. ``neuron`` scope views a weight as
  ``[n_out, -1]`` (one index per output unit's fan-in), ``layer`` scope flattens the whole tensor.
- ``src/modules/compression.py`` ``make_bound_si``: ``m = d (1 + eta_m)^(q/(p-q)) (1 - si)^(qp/(q-p))`` rounded up
  with ``ceil`` (our ``a_r`` is their ``eta_m``), then ``retain_ratio = m / d``,
  ``prune_ratio = clamp(gamma (1 - retain_ratio), 0, beta)``, ``num_prune = floor(d * prune_ratio)``.

Where we differ, all on edge cases: ``I = 0`` (not NaN) when ``d = 0`` (docs/methods.md, the PQ index) or when
every active entry is 0 (``||w||_q = 0``, nothing to measure); the ratio is 0 for ``d = 0`` (their code divides by
zero); the bound is clipped to ``[0, d]`` (it can only exceed ``d`` through rounding, ``I`` being ``>= 0``); the maths
runs in float64. The paper text states ``r`` without the ``ceil``; we follow the code.
"""

from __future__ import annotations

import torch

SCOPES = ("neuron", "layer")


def check_pq(p: float, q: float) -> None:
    if not (0.0 < p < q < float("inf")):
        raise ValueError(f"the PQ index needs 0 < p < q < inf, got p={p}, q={q}")


def unit_rows(tensor: torch.Tensor, scope: str) -> torch.Tensor:
    """``tensor`` (a weight or its mask) viewed as ``[units, unit_size]``.

    ``neuron``: one row per output unit (its fan-in: ``c_in * k_h * k_w`` for a conv); ``layer``: a single row.
    """
    if scope == "neuron":
        return tensor.reshape(tensor.shape[0], -1)
    if scope == "layer":
        return tensor.reshape(1, -1)
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def pq_index(
    w: torch.Tensor,
    p: float = 0.5,
    q: float = 1.0,
    *,
    mask: torch.Tensor | None = None,
    dim: int | None = None,
) -> torch.Tensor:
    """The PQ index ``I_pq`` of ``w`` over its active entries (float64).

    Args:
        w: the weights.
        p, q: the norms, ``0 < p < q``.
        mask: bool, same shape: the active entries (``d`` = their count); ``None`` = every entry is active.
        dim: reduce along this dimension (e.g. ``1`` for the rows of a ``[units, fan_in]`` view); ``None`` = the
            whole tensor, a scalar.
    """
    check_pq(p, q)
    x = w.detach().to(torch.float64).abs()
    if mask is not None:
        if mask.shape != w.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(w.shape)}")
        x = x * mask
        d = mask.to(torch.float64).sum() if dim is None else mask.to(torch.float64).sum(dim)
    else:
        n = x.numel() if dim is None else x.shape[dim]
        d = torch.full(x.sum(dim).shape if dim is not None else (), float(n), dtype=torch.float64, device=x.device)
    sum_p = x.pow(p).sum() if dim is None else x.pow(p).sum(dim)
    sum_q = x.pow(q).sum() if dim is None else x.pow(q).sum(dim)
    norm_p, norm_q = sum_p.pow(1.0 / p), sum_q.pow(1.0 / q)
    defined = (d > 0) & (norm_q > 0)
    safe_q = torch.where(defined, norm_q, torch.ones_like(norm_q))
    safe_d = torch.where(defined, d, torch.ones_like(d))
    index = 1.0 - safe_d.pow(1.0 / q - 1.0 / p) * norm_p / safe_q
    return torch.where(defined, index, torch.zeros_like(index))


def pq_bound(index: torch.Tensor, d: torch.Tensor, p: float = 0.5, q: float = 1.0, a_r: float = 0.001) -> torch.Tensor:
    """Diao's retained-weight bound ``r = ceil(d (1 + a_r)^(-q/(q-p)) (1 - I)^(qp/(q-p)))``, clipped to ``[0, d]``."""
    check_pq(p, q)
    if a_r < 0:
        raise ValueError(f"a_r must be >= 0, got {a_r}")
    index = torch.as_tensor(index, dtype=torch.float64)
    d = torch.as_tensor(d, dtype=torch.float64, device=index.device)
    m = d * (1.0 + a_r) ** (-q / (q - p)) * (1.0 - index).clamp(min=0.0).pow(q * p / (q - p))
    return torch.minimum(torch.ceil(m), d).clamp(min=0.0)


def rewire_ratio(bound: torch.Tensor, d: torch.Tensor, gamma: float = 1.2, beta: float = 0.9) -> torch.Tensor:
    """The rewiring (pruning) ratio ``c = clamp(gamma * (1 - r/d), 0, beta)``; 0 where ``d = 0``."""
    bound = torch.as_tensor(bound, dtype=torch.float64)
    d = torch.as_tensor(d, dtype=torch.float64, device=bound.device)
    has = d > 0
    ratio = (gamma * (1.0 - bound / torch.where(has, d, torch.ones_like(d)))).clamp(0.0, beta)
    return torch.where(has, ratio, torch.zeros_like(ratio))


def prune_counts(ratio: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``floor(c * d)`` per unit, as int64."""
    ratio = torch.as_tensor(ratio, dtype=torch.float64)
    return torch.floor(ratio * torch.as_tensor(d, dtype=torch.float64, device=ratio.device)).long()


def unit_stats(
    weight: torch.Tensor,
    mask: torch.Tensor,
    scope: str,
    p: float = 0.5,
    q: float = 1.0,
    a_r: float = 0.001,
    gamma: float = 1.2,
    beta: float = 0.9,
) -> dict[str, torch.Tensor]:
    """Stage I for one layer: per unit of ``scope``, ``d`` (active count), ``index``, ``bound``, ``ratio`` and
    ``n_prune`` (float64 / int64 tensors of one entry per unit).

    ``weight`` holds the unit's entries and ``mask`` which are active: the weights themselves, or, at a coarse
    granularity, one L1 norm per group of weights and the groups present (a group-shaped tensor,
    :meth:`~sparsesnn.sparse.granularity.Grouping.reduce`), so that ``d`` and ``n_prune`` count groups."""
    w, m = unit_rows(weight, scope), unit_rows(mask, scope)
    d = m.to(torch.float64).sum(1)
    index = pq_index(w, p, q, mask=m, dim=1)
    bound = pq_bound(index, d, p, q, a_r)
    ratio = rewire_ratio(bound, d, gamma, beta)
    return {"d": d, "index": index, "bound": bound, "ratio": ratio, "n_prune": prune_counts(ratio, d)}
