"""Events -> frames: float32 event counts ``[T, 2, H, W]``, one channel per polarity, optionally downsampled.

:class:`ToFrames` is validated at construction, the way SpikingJelly validates ``frames_number`` / ``duration``:
exactly one of ``n_frames`` (split by time or by event count) or ``frame_duration_us``.

Bin conventions (``t0`` = first, ``t1`` = last timestamp of the sample, ``N`` events, ``T`` frames)
    * ``split_by="time"``: T equal time bins over the closed interval ``[t0, t1]``. Event ``i`` goes to
      ``floor((t_i - t0) * T / (t1 - t0))``, and the last event (``t_i = t1``) to bin ``T - 1``: every event is
      counted. (Tonic's ``ToFrame`` uses half-open bins and drops the events at ``t1``; SpikingJelly's last bin is
      closed too.) When ``t1 == t0`` every event goes to bin 0.
    * ``split_by="count"``: T bins of (nearly) equal event counts, in file order: event ``i`` goes to
      ``floor(i * T / N)``, so bin sizes differ by at most one. With ``N < T`` some frames are empty.
    * ``frame_duration_us=d``: bins ``[t0 + k d, t0 + (k + 1) d)``; the sequence has ``floor((t1 - t0) / d) + 1``
      frames (the last event is counted), or exactly ``length`` frames when ``length`` is given (zero frames
      appended, or events at or after ``t0 + length * d`` left out), which a dataset needs so that every sample of a
      batch has the same T.
    * An empty sample gives all-zero frames (T = ``n_frames``, ``length`` or 1).

Channels: 0 = OFF (``p`` False), 1 = ON (``p`` True), as Tonic's ``ToFrame``.

Downsampling (``size``, the output ``(H, W)``; an int means square): area pooling of counts. Each output pixel
covers ``in / out`` input pixels along each axis and receives the counts of the input pixels inside its footprint,
input pixels that straddle a footprint boundary contributing the covered fraction of their counts. Columns of the
pooling matrix sum to one, so the total count of every frame is preserved. When the sensor size is a multiple of the
output size (128 -> 64, 34 -> 17) this is plain sum pooling of ``k x k`` blocks and the counts stay integers; for
128 -> 48 (a footprint of 8/3 pixels) they become fractional.

Example:
    >>> import numpy as np
    >>> from sparsesnn.data.events import make_events
    >>> ev = make_events([0, 1, 2], [0, 0, 1], [0, 50, 100], [True, False, True])
    >>> ToFrames(sensor_size=(4, 4), n_frames=2)(ev).shape
    (2, 2, 4, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sparsesnn.core.errors import ConfigError

__all__ = ["ToFrames", "area_matrix", "count_frames", "frame_index"]

SplitBy = Literal["time", "count"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def frame_index(
    t: np.ndarray,
    n_frames: int | None = None,
    split_by: SplitBy = "time",
    frame_duration_us: int | None = None,
) -> tuple[np.ndarray, int]:
    """Frame index of every event (int64) and the number of frames, by the conventions of the module docstring.

    >>> frame_index(np.array([0, 5, 10]), n_frames=2)[0].tolist()
    [0, 1, 1]
    """
    n = t.shape[0]
    if frame_duration_us is not None:
        if n == 0:
            return np.zeros(0, dtype=np.int64), 1
        t0 = int(t.min())
        index = (t.astype(np.int64) - t0) // int(frame_duration_us)
        return index, int(index.max()) + 1
    assert n_frames is not None
    if n == 0:
        return np.zeros(0, dtype=np.int64), n_frames
    if split_by == "count":
        return (np.arange(n, dtype=np.int64) * n_frames) // n, n_frames
    t0, t1 = int(t.min()), int(t.max())
    span = t1 - t0
    if span == 0:
        return np.zeros(n, dtype=np.int64), n_frames
    index = ((t.astype(np.int64) - t0) * n_frames) // span
    np.minimum(index, n_frames - 1, out=index)  # t == t1 lands in the last bin (closed on the right)
    return index, n_frames


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float32 matrix of area pooling: entry ``(i, j)`` is the fraction of input pixel ``j`` inside
    output pixel ``i``'s footprint ``[i * n_in / n_out, (i + 1) * n_in / n_out)``; every column sums to one.

    >>> area_matrix(4, 2).tolist()
    [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    """
    if n_out > n_in:
        raise ValueError(f"area pooling only reduces a size: {n_in} -> {n_out}")
    # Work in units of 1 / n_out of an input pixel so the footprint edges are integers: exact fractions.
    j = np.arange(n_in, dtype=np.int64)
    i = np.arange(n_out, dtype=np.int64)
    lo = np.maximum(i[:, None] * n_in, j[None, :] * n_out)
    hi = np.minimum((i[:, None] + 1) * n_in, (j[None, :] + 1) * n_out)
    return (np.clip(hi - lo, 0, None) / n_out).astype(np.float32)


def count_frames(
    index: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    n_frames: int,
    sensor_size: tuple[int, int],
    output_hw: tuple[int, int],
) -> np.ndarray:
    """Float32 counts ``[n_frames, 2, H, W]`` of events already assigned to frames (``0 <= index < n_frames``):
    entry ``[k, c, i, j]`` is the number of events with ``index == k`` and polarity ``c`` (0 = OFF, 1 = ON) at the
    input pixels of output pixel ``(i, j)``, each input pixel weighted by the fraction of it inside that pixel's
    footprint (area pooling, see the module docstring; sum pooling when the sizes divide). ``x``, ``y`` must lie
    inside ``sensor_size`` (width, height). The one binning :class:`ToFrames` and
    :class:`~sparsesnn.data.stream.EventBinner` share, so that both give the same frames bit for bit."""
    width, height = sensor_size
    out_h, out_w = output_hw
    index = np.asarray(index, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p).astype(np.int64)
    if height % out_h == 0 and width % out_w == 0:  # sum pooling = integer binning of coordinates
        y = y // (height // out_h)
        x = x // (width // out_w)
        flat = ((index * 2 + p) * out_h + y) * out_w + x
        counts = np.bincount(flat, minlength=n_frames * 2 * out_h * out_w)
        return counts.astype(np.float32).reshape(n_frames, 2, out_h, out_w)
    flat = ((index * 2 + p) * height + y) * width + x
    full = np.bincount(flat, minlength=n_frames * 2 * height * width).astype(np.float32)
    full = full.reshape(n_frames, 2, height, width)
    rows = area_matrix(height, out_h)
    cols = area_matrix(width, out_w)
    return np.ascontiguousarray(rows @ full @ cols.T, dtype=np.float32)


@dataclass(frozen=True)
class ToFrames:
    """Events (:data:`~sparsesnn.data.events.EVENT_DTYPE`) -> float32 counts ``[T, 2, H, W]``.

    ``sensor_size`` is the events' ``(width, height)``; exactly one of ``n_frames`` (with ``split_by`` "time" or
    "count") or ``frame_duration_us`` (optionally with ``length``); ``size`` is the output ``(height, width)`` (or an
    int for square), reached by area pooling of counts. Events outside the sensor are an error (decoders already
    guarantee they are inside).
    """

    sensor_size: tuple[int, int]
    n_frames: int | None = None
    split_by: SplitBy = "time"
    frame_duration_us: int | None = None
    length: int | None = None
    size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sensor_size, (tuple, list)) or len(self.sensor_size) != 2:
            raise ConfigError(f"sensor_size must be (width, height), got {self.sensor_size!r}")
        w, h = (_positive_int("sensor_size", v) for v in self.sensor_size)
        object.__setattr__(self, "sensor_size", (w, h))
        if (self.n_frames is None) == (self.frame_duration_us is None):
            raise ConfigError(
                "give exactly one of n_frames (split by time or event count) or frame_duration_us; got "
                f"n_frames={self.n_frames!r}, frame_duration_us={self.frame_duration_us!r}"
            )
        if self.n_frames is not None:
            _positive_int("n_frames", self.n_frames)
            if self.length is not None:
                raise ConfigError(f"length (got {self.length!r}) only applies with frame_duration_us, not n_frames")
        else:
            _positive_int("frame_duration_us", self.frame_duration_us)
            if self.length is not None:
                _positive_int("length", self.length)
        if self.split_by not in ("time", "count"):
            raise ConfigError(f"split_by must be 'time' or 'count', got {self.split_by!r}")
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, (int, np.integer)) else tuple(self.size)
            if len(size) != 2:
                raise ConfigError(f"size must be an int or (height, width), got {self.size!r}")
            out_h, out_w = (_positive_int("size", v) for v in size)
            if out_h > h or out_w > w:
                raise ConfigError(f"size {out_h}x{out_w} is larger than the {h}x{w} sensor; only downsampling exists")
            object.__setattr__(self, "size", (out_h, out_w))

    @property
    def output_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        if self.size is None:
            return self.sensor_size[1], self.sensor_size[0]
        assert isinstance(self.size, tuple)
        return self.size

    @property
    def time_steps(self) -> int | None:
        """T of every sample, or None when it varies (frame duration without ``length``)."""
        return self.n_frames if self.n_frames is not None else self.length

    def cache_params(self) -> dict[str, Any]:
        """Every parameter that changes the frames, for cache keys."""
        return {
            "sensor_size": list(self.sensor_size),
            "n_frames": self.n_frames,
            "split_by": self.split_by if self.n_frames is not None else None,
            "frame_duration_us": self.frame_duration_us,
            "length": self.length,
            "size": list(self.output_hw),
            "channels": "off,on",
        }

    def __call__(self, events: np.ndarray) -> np.ndarray:
        width, height = self.sensor_size
        x = events["x"].astype(np.int64)
        y = events["y"].astype(np.int64)
        if x.size and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
            raise ValueError(f"events outside the {width}x{height} sensor")
        index, n_frames = frame_index(events["t"], self.n_frames, self.split_by, self.frame_duration_us)
        if self.length is not None:
            inside = index < self.length
            if not inside.all():
                index, x, y = index[inside], x[inside], y[inside]
                events = events[inside]
            n_frames = self.length
        return count_frames(index, x, y, events["p"], n_frames, self.sensor_size, self.output_hw)

    def __repr__(self) -> str:
        mode = (
            f"n_frames={self.n_frames}, split_by={self.split_by!r}"
            if self.n_frames is not None
            else f"frame_duration_us={self.frame_duration_us}, length={self.length}"
        )
        return f"ToFrames(sensor_size={self.sensor_size}, {mode}, size={self.output_hw})"
