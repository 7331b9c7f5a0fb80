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
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True)
class PeriodicSchedule:
    """*When* a periodic structure update runs, and *how much* it rewires: the timing part of a rewiring method,
    apart from its prune / grow criteria (what to change).

    An update after step (or epoch) ``t`` of ``T`` needs ``t % every == 0`` and ``t < t_end = floor(stop_at * T)``
    with ``stop_at <= 1``, so the run's last step (epoch) never changes the topology. ``alpha(t)`` is the drop
    fraction of :func:`drop_fraction` (``alpha0`` decayed by ``decay``; 0 from ``t_end`` on).
    """

    every: int
    unit: Literal["steps", "epochs"]
    stop_at: float
    alpha0: float = 0.0
    decay: str = "constant"

    def end(self, total: int) -> int:
        """``t_end = floor(stop_at * total)`` (0 when the budget is unknown)."""
        return math.floor(self.stop_at * total) if total else 0

    def is_update(self, t: int, total: int) -> bool:
        return t > 0 and t % self.every == 0 and t < self.end(total)

    def alpha(self, t: int, total: int) -> float:
        return drop_fraction(self.decay, self.alpha0, t, self.end(total))

    def never_fires(self, total: int, what: str, knob: str) -> str | None:
        """Why no update could happen within ``total`` (None when one can): ``what`` names the update, ``knob`` the
        setting that sets ``every``."""
        end = self.end(total)
        if self.every < end:
            return None
        one = self.unit[:-1]
        return (
            f"{what} would never run: the first is after {one} {self.every} ({knob}) but they stop at {one} {end} "
            f"(stop_at = {self.stop_at} of {total} {self.unit}; the last {one} never ends with one); lower {knob}, "
            "raise stop_at or train longer"
        )
