"""Time-major plumbing: fold time into the batch for stateless layers, and encode static input as spike trains.

Tensors are time-major: a batch is ``[T, B, ...]``. A stateless layer (conv, BN, pooling, linear, dropout) treats
every time step alike, so :class:`TimeFolded` runs it once on ``[T*B, ...]`` (one large kernel instead of T small
ones) and unfolds the result; neurons see ``[T, B, ...]`` and loop over T inside their fused op.
"""

from __future__ import annotations

import torch
from torch import nn


class TimeFolded(nn.Module):
    """Apply a stateless ``module`` to ``[T, B, ...]`` input by folding time into the batch: ``[T*B, ...]``.

    >>> import torch
    >>> layer = TimeFolded(nn.Linear(3, 2))
    >>> layer(torch.zeros(4, 5, 3)).shape
    torch.Size([4, 5, 2])
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"TimeFolded expects [T, B, ...] input, got shape {tuple(x.shape)}")
        t, b = x.shape[0], x.shape[1]
        y = self.module(x.reshape(t * b, *x.shape[2:]))
        return y.reshape(t, b, *y.shape[1:])


class SeqFolded(nn.Sequential):
    """A sequence of stateless layers applied to ``[T, B, ...]`` with a single fold and unfold.

    Equivalent to wrapping each layer in :class:`TimeFolded`, but folds once. Parameter names are those of
    ``nn.Sequential`` (``0.weight``, ``1.weight``, ...).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() < 3:
            raise ValueError(f"SeqFolded expects [T, B, ...] input, got shape {tuple(x.shape)}")
        t, b = x.shape[0], x.shape[1]
        y = super().forward(x.reshape(t * b, *x.shape[2:]))
        return y.reshape(t, b, *y.shape[1:])


def _check_steps(time_steps: int) -> None:
    if not isinstance(time_steps, int) or isinstance(time_steps, bool) or time_steps < 1:
        raise ValueError(f"time_steps must be an integer >= 1, got {time_steps!r}")


class DirectEncoder(nn.Module):
    """Direct (analog) input: repeat a static sample ``[B, ...]`` over ``T`` steps -> ``[T, B, ...]``.

    Input that is already time-major (``time_major=True``, e.g. event frames ``[T, B, 2, H, W]``) passes through.
    """

    def __init__(self, time_steps: int) -> None:
        super().__init__()
        _check_steps(time_steps)
        self.time_steps = time_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.time_steps, *x.shape)

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}"


class PoissonEncoder(nn.Module):
    """Rate coding: at each step a pixel spikes with probability equal to its intensity clipped to ``[0, 1]``.

    ``s[t] ~ Bernoulli(clip(x, 0, 1))`` independently over ``t``. Pass a seeded ``generator`` for reproducible
    spike trains; during evaluation the same generator gives the same trains for the same seed.
    """

    def __init__(self, time_steps: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        _check_steps(time_steps)
        self.time_steps = time_steps
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.clamp(0.0, 1.0).unsqueeze(0).expand(self.time_steps, *x.shape)
        if self.generator is None:
            rand = torch.rand(p.shape, device=x.device, dtype=x.dtype)
        else:  # draw where the generator lives (it may be a CPU generator for a CUDA model), then move
            rand = torch.rand(p.shape, generator=self.generator, device=self.generator.device).to(x.device, x.dtype)
        return (rand < p).to(x.dtype)

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}"


ENCODERS: dict[str, type[nn.Module]] = {"direct": DirectEncoder, "poisson": PoissonEncoder}


def make_encoder(name: str, time_steps: int) -> nn.Module:
    """Build an encoder by name ("direct" or "poisson")."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](time_steps)
