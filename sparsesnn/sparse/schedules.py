"""Schedules of the drop fraction (dynamic sparse training) and of the target density (gradual pruning).

Drop fraction ``alpha(t)`` for ``0 <= t < t_end`` (0 from ``t_end`` on: rewiring stops):

- ``constant``: ``alpha_0``
- ``cosine`` (RigL, Evci et al. 2020, eq. 1): ``alpha_0 / 2 * (1 + cos(pi * t / t_end))``
- ``linear``: ``alpha_0 * (1 - t / t_end)``

Density for gradual magnitude pruning (GMP, Zhu & Gupta 2017, eq. 1), from ``d_i`` at ``t_start`` to ``d_f`` at
``t_end``: ``s(t) = s_f + (s_i - s_f) * (1 - (t - t_start) / (t_end - t_start))^3`` with sparsity ``s = 1 - d``.
"""

from __future__ import annotations

import math

DROP_SCHEDULES = ("constant", "cosine", "linear")


def drop_fraction(schedule: str, alpha0: float, step: int, end_step: int) -> float:
    """The fraction of active synapses to rewire at ``step``; 0 at and after ``end_step``."""
    if schedule not in DROP_SCHEDULES:
        raise ValueError(f"unknown drop schedule {schedule!r}; choose one of {DROP_SCHEDULES}")
    if step >= end_step or end_step <= 0:
        return 0.0
    progress = step / end_step
    if schedule == "constant":
        return alpha0
    if schedule == "cosine":
        return alpha0 / 2.0 * (1.0 + math.cos(math.pi * progress))
    return alpha0 * (1.0 - progress)


def cubic_density(step: int, start_step: int, end_step: int, initial: float, final: float) -> float:
    """GMP's cubic density ramp: ``initial`` before ``start_step``, ``final`` from ``end_step`` on."""
    if step <= start_step:
        return initial
    if step >= end_step:
        return final
    s_i, s_f = 1.0 - initial, 1.0 - final
    frac = (step - start_step) / (end_step - start_step)
    return 1.0 - (s_f + (s_i - s_f) * (1.0 - frac) ** 3)
