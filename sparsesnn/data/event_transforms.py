"""Augmentation of event frames ``[T, C, H, W]`` (one sample), plus two event-level counterparts.

Frame transforms are small frozen dataclasses called as ``transform(frames, generator)`` with a
``torch.Generator`` (or None for torch's global RNG), so the same seed gives the same augmented sample. They work on
the cached, framed sample, which is why event drop and time jitter are defined on counts:

* :class:`RandomTranslate` shifts the whole sequence by ``(dy, dx)`` uniform in ``[-max_shift, max_shift]``, zero
  filled: the same as a random crop of the frames zero-padded by ``max_shift`` (torchvision's
  ``RandomCrop(padding=...)``), and like TET's random roll for CIFAR10-DVS but without wrapping round.
* :class:`RandomHorizontalFlip` mirrors left-right with probability ``p``. It changes the class of DVS Gesture's
  left/right-hand and -arm gestures, so the ``dvs_gesture`` dataset leaves it off unless asked.
* :class:`EventDrop` drops each event independently with probability ``p``: on integer counts, a count ``c``
  becomes ``Binomial(c, 1 - p)``, exactly the distribution of dropping events one by one. Fractional counts (after
  area pooling) keep their integer part binomially and their fractional part with probability ``1 - p``, so the
  expected count is ``(1 - p) c`` either way.
* :class:`TimeJitter` moves each event to the previous or the next frame with probability ``p / 2`` each (thinning
  as above; events that would leave the sequence stay), the frame-level image of jittering timestamps by about one
  frame; totals are preserved.

:func:`drop_events` and :func:`jitter_times` do the same on raw events (a numpy ``Generator``), for pipelines that
frame after augmenting.

Example:
    >>> import torch
    >>> aug = Compose((RandomTranslate(2), EventDrop(0.1)))
    >>> aug(torch.ones(4, 2, 8, 8), torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2, 8, 8])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Compose",
    "EventDrop",
    "FrameTransform",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "TimeJitter",
    "drop_events",
    "jitter_times",
    "thin",
]

FrameTransform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _check_prob(name: str, p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dim() != 4:
        raise ValueError(f"expected frames [T, C, H, W], got shape {tuple(frames.shape)}")


def thin(counts: torch.Tensor, keep: float, generator: torch.Generator | None) -> torch.Tensor:
    """Keep each unit of ``counts`` with probability ``keep``: ``Binomial(floor(c), keep)`` plus the fractional
    part of ``c`` kept with probability ``keep``. On integer counts this is exact independent thinning."""
    whole = torch.floor(counts)
    kept = torch.binomial(whole, torch.full_like(whole, keep), generator=generator)
    frac = counts - whole
    if bool((frac > 0).any()):
        coin = torch.rand(counts.shape, generator=generator, dtype=counts.dtype, device=counts.device) < keep
        kept = kept + frac * coin
    return kept


@dataclass(frozen=True)
class RandomTranslate:
    """Shift all frames by one random ``(dy, dx)`` in ``[-max_shift, max_shift]``, filling with zeros."""

    max_shift: int

    def __post_init__(self) -> None:
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise ValueError(f"max_shift must be an integer >= 0, got {self.max_shift!r}")

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        if self.max_shift == 0:
            return frames
        dy, dx = (int(v) for v in torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=generator))
        h, w = frames.shape[-2:]
        out = torch.zeros_like(frames)
        if abs(dy) >= h or abs(dx) >= w:
            return out
        out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = frames[
            ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
        return out


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirror left-right (``x -> W - 1 - x``) with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_prob("p", self.p)

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        if float(torch.rand((), generator=generator)) < self.p:
            return frames.flip(-1)
        return frames


@dataclass(frozen=True)
class EventDrop:
    """Drop each event independently with probability ``p`` (binomial thinning of the counts)."""

    p: float

    def __post_init__(self) -> None:
        _check_prob("p", self.p)

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        if self.p == 0.0:
            return frames
        return thin(frames, 1.0 - self.p, generator)


@dataclass(frozen=True)
class TimeJitter:
    """Move each event to the previous or next frame with probability ``p / 2`` each; totals are preserved."""

    p: float

    def __post_init__(self) -> None:
        _check_prob("p", self.p)

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        if self.p == 0.0 or frames.shape[0] < 2:
            return frames
        movers = thin(frames, self.p, generator)
        back = thin(movers, 0.5, generator)
        ahead = movers - back
        out = frames - movers
        out[:-1] += back[1:]  # frame t+1 -> t
        out[1:] += ahead[:-1]  # frame t-1 -> t
        out[0] += back[0]  # would leave the sequence: stays
        out[-1] += ahead[-1]
        return out


@dataclass(frozen=True)
class Compose:
    """Apply frame transforms in order, each with the same generator."""

    transforms: Sequence[FrameTransform]

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for transform in self.transforms:
            frames = transform(frames, generator)
        return frames


def drop_events(events: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Events with each one dropped independently with probability ``p`` (order kept)."""
    _check_prob("p", p)
    return events[rng.random(events.shape[0]) >= p]


def jitter_times(events: np.ndarray, std_us: float, rng: np.random.Generator) -> np.ndarray:
    """Events with Gaussian noise of ``std_us`` microseconds added to each timestamp (rounded), then re-sorted by
    time (stable), as Tonic's ``TimeJitter(clip_negative=False, sort_timestamps=True)``."""
    if std_us < 0:
        raise ValueError(f"std_us must be >= 0, got {std_us!r}")
    out = events.copy()
    out["t"] = out["t"] + np.rint(rng.normal(0.0, std_us, size=out.shape[0])).astype(np.int64)
    return out[np.argsort(out["t"], kind="stable")]
