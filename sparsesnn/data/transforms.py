"""Batched image transforms: per-channel normalisation and random crop with padding plus horizontal flip.

Every transform works on a whole batch ``[B, C, H, W]`` with torch ops only (no per-sample Python loop, no PIL),
and draws its randomness from the ``torch.Generator`` it is given, so the same seed gives the same augmented
batch. Augmentations are small frozen dataclasses called as ``transform(x, generator)``, the signature
:class:`sparsesnn.data.base.ArrayDataset` expects; being plain dataclasses they pickle, so they travel to
``DataLoader`` workers.

The crop follows torchvision's ``RandomCrop(size, padding=p)`` followed by ``RandomHorizontalFlip(0.5)``: pad each
side by ``p`` pixels, then cut a window of the original size at a uniformly random offset in ``[0, 2p]`` per axis,
then mirror it left-right with probability 1/2. Padding is "zero" in the space of the raw image: when the stored
input is already normalised, pass ``fill = -mean / std`` per channel (:func:`normalized_zero`) so the padded border
is exactly what normalising a zero-padded raw image would give.

Example:
    >>> import torch
    >>> aug = RandomCropFlip(padding=4)
    >>> aug(torch.zeros(2, 3, 32, 32), torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def normalize_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalise ``x`` ``[B, C, H, W]`` in place per channel: ``(x - mean[c]) / std[c]``; returns ``x``.

    >>> import torch
    >>> normalize_(torch.ones(1, 2, 1, 1), (0.5, 0.0), (0.5, 2.0)).flatten().tolist()
    [1.0, 0.5]
    """
    channels = x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"need one mean and std per channel ({channels}), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be > 0, got {tuple(std)}")
    shape = (1, channels) + (1,) * (x.dim() - 2)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return x.sub_(m).div_(s)


def normalized_zero(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The value a raw zero pixel takes after normalisation, per channel: ``-mean[c] / std[c]``."""
    return tuple(-m / s for m, s in zip(mean, std, strict=True))


def _uniform_ints(high: int, size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``size`` integers uniform in ``[0, high)``, drawn on the generator's device and moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randint(0, high, (size,), generator=generator, device=where).to(device)


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    padding: int = 4,
    flip: bool = True,
    fill: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Random crop of the input size from ``x`` ``[B, C, H, W]`` padded by ``padding``, then a random left-right flip.

    ``fill`` is the padding value, one number or one per channel. Draws, in this order, the row offsets, the column
    offsets (each ``B`` integers in ``[0, 2 * padding]``) and, when ``flip``, ``B`` coin flips from ``generator``.
    A single gather builds the output, so the cost is one copy of the padded batch and one of the result.
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects [B, C, H, W], got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, c, h, w = x.shape
    device = x.device
    if padding > 0:
        padded = x.new_empty((b, c, h + 2 * padding, w + 2 * padding))
        if isinstance(fill, (int, float)):
            padded.fill_(float(fill))
        else:
            if len(fill) != c:
                raise ValueError(f"fill needs one value per channel ({c}), got {len(fill)}")
            padded.copy_(torch.tensor(fill, dtype=x.dtype, device=device).view(1, c, 1, 1).expand_as(padded))
        padded[:, :, padding : padding + h, padding : padding + w] = x
    else:
        padded = x
    span = 2 * padding + 1
    top = _uniform_ints(span, b, generator, device)
    left = _uniform_ints(span, b, generator, device)
    rows = top[:, None] + torch.arange(h, device=device)  # [B, H]
    cols = left[:, None] + torch.arange(w, device=device)  # [B, W]
    if flip:
        mirrored = _uniform_ints(2, b, generator, device).bool()
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass(frozen=True)
class RandomCropFlip:
    """Batched random crop with padding plus (optionally) a horizontal flip; see :func:`random_crop_flip`.

    >>> import torch
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> torch.equal(RandomCropFlip(padding=0, flip=False)(x, None), x)
    True
    """

    padding: int = 4
    flip: bool = True
    fill: float | tuple[float, ...] = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or self.padding < 0:
            raise ValueError(f"RandomCropFlip.padding must be an integer >= 0, got {self.padding!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return random_crop_flip(x, generator, padding=self.padding, flip=self.flip, fill=self.fill)
