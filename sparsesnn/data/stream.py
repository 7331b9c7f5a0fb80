"""Event streams: files read incrementally in time order, and a binner that turns a stream into frames per window.

An event camera hands over events in time order, not a finished ``[T, 2, H, W]`` sample. This module gives the two
halves of streaming input:

* **Incremental readers** (:func:`iter_atis_bin` / :func:`iter_nmnist` / :func:`iter_bs2`, :func:`iter_aedat31`,
  :func:`iter_aedat4`, and :func:`iter_events`, which picks one by the file's suffix) yield chunks of
  :data:`~sparsesnn.data.events.EVENT_DTYPE` events in time order without reading the whole file first: the
  N-MNIST / ATIS file ``chunk_events`` 5-byte records at a time, AEDAT 3.1 packet by packet (packets gathered into
  chunks of at least ``chunk_events`` events), AEDAT 4 packet by packet through the ``aedat`` package's decoder. Each
  chunk is decoded by the same code as the whole-file readers of :mod:`sparsesnn.data.events` and validated the same
  way (coordinates inside the sensor, timestamps that never go backwards, across chunks too), so the concatenated
  chunks equal what ``read_*`` returns. ``start_us`` / ``end_us`` keep the events with ``start_us <= t < end_us``
  (the convention of a DVS Gesture labels CSV row) and stop reading at the first event at or after ``end_us``.
  Differences from the whole-file readers: ``on_backwards="sort"`` cannot be streamed (it needs the whole file; use
  "error" or "drop", which streams exactly); a time range stops early, so problems after ``end_us`` go unseen; the
  AEDAT 4 stream decodes in this process (``read_aedat4``'s default ``isolate=True`` runs the decoder in a child
  process because ``aedat`` 2.3 aborts the interpreter on some malformed files; stream only trusted AEDAT 4 files).

* **The binner** :class:`EventBinner` counts events into windows of ``window_us`` microseconds and returns each
  window's frame ``[2, H, W]`` (float32) as soon as the window is known to be complete.

What a frame entry is
---------------------
With origin ``o`` (the first event's timestamp, or ``origin_us``) and window length ``w = window_us`` (an integer or
a :class:`~fractions.Fraction` of microseconds), event ``(t, x, y, p)`` belongs to window
``k = floor((t - o) / w)`` -- computed exactly in integers, ``((t - o) * w.denominator) // w.numerator`` -- so window
``k`` is the half-open interval ``[o + k w, o + (k + 1) w)``. Frame ``k`` is::

    F_k[c, i, j] = sum over events e in window k with p_e = c of  A_h[i, y_e] * A_w[j, x_e]

with channel ``c`` 0 = OFF, 1 = ON, and ``A_h`` / ``A_w`` the area-pooling matrices of
:func:`~sparsesnn.data.frames.area_matrix` (the identity without ``size``; 0/1 block sums when the sensor size is a
multiple of the output size, so entries are integer counts; fractional counts for e.g. 128 -> 48). The counting is
:func:`~sparsesnn.data.frames.count_frames`, the very function :class:`~sparsesnn.data.frames.ToFrames` uses, so a
window holding the same events as a dataset frame gives the same float32 frame bit for bit. No normalisation, no
clipping: the dataset frames are raw counts too, and the trainer only transposes them to time-major ``[T, B, ...]``.
Augmentation (translation, flip, drop, jitter) is applied by the datasets to the train split only; the binner
reproduces the un-augmented frames that evaluation sees.

When a window closes
--------------------
A window is complete when time has passed its end: when an event with a later window arrives (:meth:`~EventBinner.
push`), or when the caller says the clock has passed a time (:meth:`~EventBinner.advance`, for a camera that is
silent for a while). Windows without events in between come out as zero frames, in order. :meth:`~EventBinner.flush`
ends the stream and returns the open (partial) window if it holds events. With ``n_windows`` the stream is one
sample of exactly that many windows: later events are left out and :meth:`~EventBinner.flush` pads with zero frames.
Events must arrive in time order (a ``ValueError`` otherwise); events before the origin belong to no window and are
left out.

What a live stream can and cannot reproduce
-------------------------------------------
The datasets (:mod:`sparsesnn.data.neuromorphic`) frame a sample in one of three ways (:mod:`sparsesnn.data.frames`):

* ``frame_duration_us = d`` with ``length = L``: windows ``[t0 + k d, t0 + (k + 1) d)`` from the sample's first
  event ``t0``, the first ``L`` of them. **Exact live**: :meth:`EventBinner.for_dataset` bins by ``d`` from the first
  event, and its first ``L`` frames equal the dataset's sample (zero frames appended if the stream ends earlier)
  when the stream starts where the sample starts (for a DVS Gesture recording: stream the gesture's time range, or
  ``reset(origin_us=...)`` at its first event; a binner running across the whole recording has its window grid
  anchored at the recording's first event instead).
* ``n_frames = T``, ``split_by = "time"`` (the default of every dataset): ``T`` equal windows over the sample's own
  ``[t0, t1]``, first to last event, the last window closed on the right. The window length ``(t1 - t0) / T``
  depends on the last event, which a live stream has not seen when its first windows must close. **Exact only as a
  replay** of a sample whose first and last timestamps are known in advance (:meth:`EventBinner.for_sample`: a
  rational window ``Fraction(t1 - t0, T)`` from ``t0``, the event at ``t1`` counted in window ``T - 1``). Live, the
  closest fixed rule is ``w = D / T`` for the dataset's nominal sample duration ``D``
  (:data:`NOMINAL_DURATION_US`: N-MNIST 300 ms, three saccades of 100 ms each, Orchard et al. 2015; the 100 N-MNIST
  test files here span 296-313 ms from first to last event, median 306 ms), which :meth:`EventBinner.for_dataset`
  uses; a sample that is not exactly ``D`` long is binned a little differently from its dataset frames (on those
  100 files a median 93 %, at least 85 %, of each sample's events land in the same frame as the dataset's). DVS
  Gesture and CIFAR10-DVS have no fixed duration (gestures last about 6 to 11 s): pass ``sample_duration_us``.
* ``split_by = "count"``: ``T`` bins of equal event counts, by each event's rank among the sample's ``N`` events.
  Not reproducible from timestamps at all, live or replayed; :meth:`EventBinner.for_dataset` approximates it by
  time windows only when given ``sample_duration_us`` explicitly, :meth:`EventBinner.for_sample` refuses it.

Example:
    >>> from sparsesnn.data.events import make_events
    >>> binner = EventBinner(sensor_size=(4, 4), window_us=10)
    >>> [f.sum() for f in binner.push(make_events([0, 1, 2], [0, 0, 1], [0, 5, 12], [True, False, True]))]
    [np.float32(2.0)]
    >>> [f.sum() for f in binner.flush()]
    [np.float32(1.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sparsesnn.core.errors import ConfigError, DatasetError
from sparsesnn.core.settings import validate_settings
from sparsesnn.data.events import (
    _AEDAT3_EVENT,
    _ATIS_OVERFLOW_Y,
    _END_HEADER,
    _PACKET_HEADER,
    _POLARITY_EVENT,
    AEDAT4_EXTRA_HINT,
    DVS128_SENSOR,
    NMNIST_SENSOR,
    OnBackwards,
    OnInvalid,
    _aedat3_header_end,
    _aedat31_check_payload,
    _aedat31_fields,
    _aedat31_packet_header,
    _check_options,
    _decode_atis,
    _finish,
    _finish_aedat31,
    open_event_file,
)
from sparsesnn.data.frames import ToFrames, count_frames
from sparsesnn.data.neuromorphic import (
    CIFAR10_DVS_SPEC,
    DVS_GESTURE_SPEC,
    NMNIST_SPEC,
    EventDatasetSpec,
    EventFramesSettings,
    _frames_spec,
)

__all__ = [
    "NOMINAL_DURATION_US",
    "EventBinner",
    "iter_aedat4",
    "iter_aedat31",
    "iter_atis_bin",
    "iter_bs2",
    "iter_events",
    "iter_nmnist",
]

#: Default events per chunk of the readers.
CHUNK_EVENTS = 65_536

#: The nominal sample duration of a dataset whose frames split each sample into ``T`` equal time windows: the live
#: window is this divided by ``T``. Only N-MNIST has one (three 100 ms saccades, Orchard et al. 2015).
NOMINAL_DURATION_US: dict[str, int] = {"nmnist": 300_000}

_SPECS: dict[str, EventDatasetSpec] = {s.name: s for s in (NMNIST_SPEC, DVS_GESTURE_SPEC, CIFAR10_DVS_SPEC)}


# ----------------------------------------------------------------------------------------------- readers: shared


def _check_stream_options(on_backwards: str, on_invalid: str) -> None:
    _check_options(on_backwards, on_invalid)
    if on_backwards == "sort":
        raise ValueError(
            "on_backwards='sort' needs the whole file (a stable sort by time) and cannot be streamed; use 'error' or "
            "'drop' (streamed exactly as the whole-file readers do), or read the file whole with sparsesnn.data.events"
        )


class _TimeOrder:
    """Time order across chunks (each chunk is already in order, by ``_finish``), and the time range filter."""

    def __init__(self, path: Path, on_backwards: str, start_us: int | None, end_us: int | None) -> None:
        if start_us is not None and end_us is not None and end_us < start_us:
            raise ValueError(f"end_us ({end_us}) is before start_us ({start_us})")
        self.path = path
        self.on_backwards = on_backwards
        self.start_us = start_us
        self.end_us = end_us
        self.latest: int | None = None  # the largest timestamp so far
        self.done = False  # an event at or after end_us was seen: nothing more to read

    def __call__(self, events: np.ndarray, where: str) -> np.ndarray:
        if events.size and self.latest is not None and int(events["t"][0]) < self.latest:
            if self.on_backwards == "error":
                first = int(events["t"][0])
                raise DatasetError(
                    f"{self.path}: {where}: timestamp {first} us is earlier than the previous one ({self.latest} us); "
                    "pass on_backwards='drop' to repair"
                )
            events = events[events["t"] >= self.latest]  # the chunk is in order: this keeps a suffix
        if events.size:
            self.latest = int(events["t"][-1])
        t = events["t"]
        if self.end_us is not None and t.size and int(t[-1]) >= self.end_us:
            events = events[: int(np.searchsorted(t, self.end_us, side="left"))]
            self.done = True
            t = events["t"]
        if self.start_us is not None and t.size and int(t[0]) < self.start_us:
            events = events[int(np.searchsorted(t, self.start_us, side="left")) :]
        return events


# ------------------------------------------------------------------------------------------------ N-MNIST / ATIS


def iter_atis_bin(
    path: str | Path,
    sensor_size: tuple[int, int] | None = NMNIST_SENSOR,
    *,
    chunk_events: int = CHUNK_EVENTS,
    start_us: int | None = None,
    end_us: int | None = None,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> Iterator[np.ndarray]:
    """Events of an N-MNIST / ATIS 40-bit file, ``chunk_events`` records (5 bytes each) read at a time.

    Each chunk is decoded by :func:`~sparsesnn.data.events.read_atis_bin`'s decoder; overflow markers (y = 240) of
    earlier chunks carry into later timestamps. The chunks concatenated equal ``read_atis_bin(path, sensor_size)``
    (restricted to ``start_us <= t < end_us`` when given). Chunks may be empty (a chunk of markers only, or dropped
    events)."""
    _check_stream_options(on_backwards, on_invalid)
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    path = Path(path)
    order = _TimeOrder(path, on_backwards, start_us, end_us)
    with open_event_file(path, "an ATIS/N-MNIST binary file") as fh:
        offset = 0
        overflows = 0
        while not order.done:
            data = fh.read(5 * chunk_events)
            if not data:
                return
            events = _decode_atis(data, path, sensor_size, on_backwards, on_invalid, offset, overflows)
            overflows += int(np.count_nonzero(np.frombuffer(data, np.uint8)[1::5] == _ATIS_OVERFLOW_Y))
            yield order(events, f"the records from byte offset {offset}")
            offset += len(data)


def iter_nmnist(path: str | Path, **options: Any) -> Iterator[np.ndarray]:
    """One N-MNIST sample (34x34) streamed: :func:`iter_atis_bin` with ``sensor_size=(34, 34)``."""
    return iter_atis_bin(path, NMNIST_SENSOR, **options)


def iter_bs2(path: str | Path, sensor_size: tuple[int, int] = DVS128_SENSOR, **options: Any) -> Iterator[np.ndarray]:
    """A SLAYER ``.bs2`` clip (DVS128 Gesture clips are 128x128) streamed: :func:`iter_atis_bin`."""
    return iter_atis_bin(path, sensor_size, **options)


# ------------------------------------------------------------------------------------------------------ AEDAT 3.1


def _aedat31_header(fh: BinaryIO, path: Path) -> int:
    """Read the header lines up to ``#!END-HEADER`` (validated by the whole-file reader's check); its length."""
    lines = []
    while True:
        line = fh.readline(1 << 16)
        lines.append(line)
        if not line or line == _END_HEADER or not line.startswith(b"#"):
            break
    return _aedat3_header_end(b"".join(lines), path)


def _aedat31_batch(
    path: Path,
    packets: list[tuple[int, int, int, bytes]],
    sensor_size: tuple[int, int] | None,
    on_backwards: str,
    on_invalid: str,
) -> np.ndarray:
    """Decode polarity packets ``(payload offset, eventNumber, eventTSOverflow, payload)`` as ``read_aedat31``."""
    raw = np.concatenate([np.frombuffer(payload, _AEDAT3_EVENT, number) for _, number, _, payload in packets])
    counts = np.asarray([number for _, number, _, _ in packets], dtype=np.int64)
    overflow = np.repeat(np.asarray([tsoverflow for _, _, tsoverflow, _ in packets], dtype=np.int64), counts)
    word, ts = raw["data"], raw["ts"]
    valid_mark = (word & 1).astype(bool)
    keep = np.flatnonzero(valid_mark) if not valid_mark.all() else None
    if keep is not None:
        word, ts, overflow = word[keep], ts[keep], overflow[keep]
    negative = ts < 0
    x, y, t, p = _aedat31_fields(word, ts, overflow)
    ends = np.cumsum(counts)

    def offset_of(i: int) -> int:
        j = int(keep[i]) if keep is not None else i
        packet = int(np.searchsorted(ends, j, side="right"))
        return packets[packet][0] + 8 * (j - int(ends[packet] - counts[packet]))

    return _finish_aedat31(path, (x, y, t, p), negative, sensor_size, on_backwards, on_invalid, offset_of)


def iter_aedat31(
    path: str | Path,
    sensor_size: tuple[int, int] | None = DVS128_SENSOR,
    *,
    chunk_events: int = CHUNK_EVENTS,
    start_us: int | None = None,
    end_us: int | None = None,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> Iterator[np.ndarray]:
    """Polarity events of an AEDAT 3.1 file, read packet by packet and decoded in chunks of at least
    ``chunk_events`` events (whole packets), with the checks of :func:`~sparsesnn.data.events.read_aedat31`.

    ``start_us`` / ``end_us`` stream one labelled gesture of a DVS Gesture recording (the events with
    ``start_us <= t < end_us``, as the ``dvs_gesture`` dataset cuts its samples); reading stops at the first event at
    or after ``end_us``. Packets before ``start_us`` are still read and decoded (their timestamps are only known by
    decoding them)."""
    _check_stream_options(on_backwards, on_invalid)
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    path = Path(path)
    order = _TimeOrder(path, on_backwards, start_us, end_us)
    with open_event_file(path, "an AEDAT 3.1 file") as fh:
        pos = _aedat31_header(fh, path)
        fh.seek(pos)
        batch: list[tuple[int, int, int, bytes]] = []
        pending = 0
        while not order.done:
            head = fh.read(_PACKET_HEADER.size)
            if head:
                etype, tsoverflow, number, capacity, esize = _aedat31_packet_header(head, path, pos)
                payload = fh.read(capacity * esize)
                _aedat31_check_payload(path, pos, capacity, esize, len(payload))
                if etype == _POLARITY_EVENT and number:
                    batch.append((pos + _PACKET_HEADER.size, number, tsoverflow, payload))
                    pending += number
                pos += _PACKET_HEADER.size + len(payload)
            if batch and (pending >= chunk_events or not head):
                events = _aedat31_batch(path, batch, sensor_size, on_backwards, on_invalid)
                yield order(events, f"the packets from byte offset {batch[0][0] - _PACKET_HEADER.size}")
                batch, pending = [], 0
            if not head:
                return


# -------------------------------------------------------------------------------------------------------- AEDAT 4


def iter_aedat4(
    path: str | Path,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> Iterator[np.ndarray]:
    """Events of the first event stream of an AEDAT 4 file, one chunk per packet, decoded by the ``aedat`` package
    (optional extra ``aedat4``) as :func:`~sparsesnn.data.events.read_aedat4` does, in this process (see the module
    docstring: stream trusted files only). The sensor size comes from the stream's description in the file."""
    _check_stream_options(on_backwards, on_invalid)
    path = Path(path)
    with open_event_file(path, "an AEDAT 4 file") as fh:
        head = fh.read(14)
    if not head.startswith(b"#!AER-DAT4."):
        raise DatasetError(f"{path}: byte offset 0: expected the AEDAT 4 magic '#!AER-DAT4.0\\r\\n', found {head!r}")
    try:
        import aedat  # type: ignore[import-not-found]
    except ImportError:
        raise ImportError(f"reading AEDAT 4 files needs the optional extra: {AEDAT4_EXTRA_HINT}") from None
    order = _TimeOrder(path, on_backwards, start_us, end_us)
    try:
        decoder = aedat.Decoder(str(path))
        streams = decoder.id_to_stream()
    except Exception as err:
        raise DatasetError(f"{path}: byte offset unknown: cannot decode AEDAT 4 ({type(err).__name__}: {err})") from err
    ids = sorted(i for i, s in streams.items() if s.get("type") == "events")
    if not ids:
        raise DatasetError(f"{path}: no event stream in this AEDAT 4 file (streams: {streams})")
    target = ids[0]
    width, height = streams[target].get("width"), streams[target].get("height")
    sensor = (int(width), int(height)) if width and height else None
    packets = iter(decoder)
    number = 0
    while not order.done:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except Exception as err:
            raise DatasetError(
                f"{path}: byte offset unknown: cannot decode AEDAT 4 packet {number} ({type(err).__name__}: {err})"
            ) from err
        number += 1
        if packet.get("stream_id") != target or "events" not in packet:
            continue
        raw = packet["events"]
        pol = "on" if "on" in (raw.dtype.names or ()) else "p"
        events = _finish(
            path,
            raw["x"].astype(np.int16),
            raw["y"].astype(np.int16),
            raw["t"].astype(np.int64),
            raw[pol].astype(bool),
            sensor,
            on_backwards,
            on_invalid,
            lambda i: None,
            "AEDAT 4 event",
        )
        yield order(events, f"packet {number - 1}")


def iter_events(path: str | Path, **options: Any) -> Iterator[np.ndarray]:
    """Stream any supported file by its suffix: ``.bin`` (N-MNIST, 34x34), ``.bs2`` (SLAYER, 128x128), ``.aedat``
    (AEDAT 3.1, 128x128 by default), ``.aedat4``; ``options`` go to the reader."""
    suffix = Path(path).suffix.lower()
    readers = {".bin": iter_nmnist, ".bs2": iter_bs2, ".aedat": iter_aedat31, ".aedat4": iter_aedat4}
    if suffix not in readers:
        raise ValueError(f"{path}: unknown event file suffix {suffix!r}; expected one of {sorted(readers)}")
    return readers[suffix](path, **options)


# ---------------------------------------------------------------------------------------------------- the binner


def _as_window(window_us: int | Fraction) -> Fraction:
    if isinstance(window_us, bool) or not isinstance(window_us, (int, np.integer, Fraction)):
        raise ConfigError(f"window_us must be a positive int or Fraction of microseconds, got {window_us!r}")
    window = Fraction(int(window_us)) if not isinstance(window_us, Fraction) else window_us
    if window <= 0:
        raise ConfigError(f"window_us must be positive, got {window_us!r}")
    return window


class EventBinner:
    """Counts a time-ordered event stream into frames ``[2, H, W]`` (float32) of ``window_us``-long windows.

    ``sensor_size`` is the events' ``(width, height)``; ``size`` the output ``(H, W)`` (or an int for square) by area
    pooling, as :class:`~sparsesnn.data.frames.ToFrames`. ``window_us`` is an int or a
    :class:`~fractions.Fraction` of microseconds. ``origin_us`` starts window 0 (default: the first event pushed).
    ``n_windows`` makes the stream one sample of that many windows (later events left out, :meth:`flush` pads with
    zero frames); ``end_us`` (only with ``n_windows``) is a timestamp counted in the last window even where it lies on
    its right edge (every event up to it is counted, past the last window's edge in the last window: the closed last
    bin of ``split_by="time"``); events after it are left out. See the module docstring
    for the equation of a frame entry, when windows close, and which dataset framings a live stream reproduces.

    ``time_steps`` is the number of frames the dataset gives a sample (set by the dataset constructors), the length
    of the frame sequences a model trained on it expects.
    """

    def __init__(
        self,
        sensor_size: tuple[int, int],
        window_us: int | Fraction,
        *,
        size: int | tuple[int, int] | None = None,
        origin_us: int | None = None,
        n_windows: int | None = None,
        end_us: int | None = None,
        time_steps: int | None = None,
    ) -> None:
        # ToFrames validates sensor_size and size, and knows the output (H, W).
        self._shape = ToFrames(sensor_size=tuple(sensor_size), frame_duration_us=1, size=size)  # type: ignore[arg-type]
        self.window_us = _as_window(window_us)
        if n_windows is not None and (isinstance(n_windows, bool) or int(n_windows) != n_windows or n_windows < 1):
            raise ConfigError(f"n_windows must be a positive integer, got {n_windows!r}")
        if end_us is not None and n_windows is None:
            raise ConfigError("end_us (the closed right edge of the last window) needs n_windows")
        self.n_windows = None if n_windows is None else int(n_windows)
        self.end_us = None if end_us is None else int(end_us)
        self.time_steps = time_steps if time_steps is not None else self.n_windows
        self._origin_given = None if origin_us is None else int(origin_us)
        self.reset()

    # -------------------------------------------------------------------------------------------------- properties

    @property
    def sensor_size(self) -> tuple[int, int]:
        """``(width, height)`` of the events."""
        return self._shape.sensor_size

    @property
    def output_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        return self._shape.output_hw

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(2, H, W)``."""
        return (2, *self.output_hw)

    @property
    def origin_us(self) -> int | None:
        """Where window 0 starts (None until the first event when no ``origin_us`` was given)."""
        return self._origin

    @property
    def windows_emitted(self) -> int:
        """How many frames have been returned since the start (or :meth:`reset`)."""
        return self._emitted

    def window_of(self, t_us: int) -> int:
        """Window index of timestamp ``t_us`` (the origin must be known)."""
        if self._origin is None:
            raise ValueError("the origin is not known yet (no event pushed and no origin_us given)")
        w = self.window_us
        return ((int(t_us) - self._origin) * w.denominator) // w.numerator

    # ---------------------------------------------------------------------------------------------------- stream

    def reset(self, origin_us: int | None = None) -> None:
        """Start a new stream (window 0 at ``origin_us``, or the constructor's, or the next first event)."""
        self._origin = int(origin_us) if origin_us is not None else self._origin_given
        self._k = 0  # the open window
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (x, y, p) of the open window's events
        self._latest: int | None = None
        self._flushed = False
        self._emitted = 0

    def _horizon(self, t: np.ndarray) -> np.ndarray:
        """Window of each timestamp; with ``end_us``, timestamps up to it clamped into the windows, later ones past."""
        assert self._origin is not None
        w = self.window_us
        index = ((t - self._origin) * w.denominator) // w.numerator
        if self.end_us is not None:
            assert self.n_windows is not None
            index = np.where(t > self.end_us, np.maximum(index, self.n_windows), np.minimum(index, self.n_windows - 1))
        return index

    def _close(self, upto: int, index: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> list[np.ndarray]:
        """Time has reached window ``upto``: close windows ``self._k .. upto - 1`` (at most up to ``n_windows``),
        counting the pending events and the new ones (``index``, sorted, all ``>= self._k``) that fall in them; the
        new events of window ``upto`` become the open window's, those past ``n_windows`` are left out."""
        last = upto if self.n_windows is None else min(upto, self.n_windows)
        cut = 0
        frames: list[np.ndarray] = []
        if last > self._k:
            cut = int(np.searchsorted(index, last, side="left"))
            counted = count_frames(
                np.concatenate([np.zeros(sum(len(a) for a, _, _ in self._pending), np.int64), index[:cut] - self._k]),
                np.concatenate([a for a, _, _ in self._pending] + [x[:cut]]),
                np.concatenate([b for _, b, _ in self._pending] + [y[:cut]]),
                np.concatenate([c for _, _, c in self._pending] + [p[:cut]]),
                last - self._k,
                self.sensor_size,
                self.output_hw,
            )
            frames = list(counted)
            self._pending = []
        self._k = max(self._k, upto)
        if index.size > cut and (self.n_windows is None or self._k < self.n_windows):
            self._pending.append((x[cut:], y[cut:], p[cut:]))  # all in window self._k (index <= upto)
        return frames

    def push(self, events: np.ndarray) -> list[np.ndarray]:
        """Count ``events`` (:data:`~sparsesnn.data.events.EVENT_DTYPE`, in time order, later than every event pushed
        before) and return the frames ``[2, H, W]`` of the windows they complete, oldest first (possibly none; zero
        frames for windows without events). Raises ``ValueError`` for events out of order or outside the sensor."""
        if self._flushed:
            raise ValueError("the stream was flushed; call reset() to start a new one")
        if events.dtype.names is None or not {"x", "y", "t", "p"} <= set(events.dtype.names):
            raise ValueError(f"events must be a structured array with fields x, y, t, p, got dtype {events.dtype}")
        if events.size == 0:
            return []
        t = events["t"].astype(np.int64)
        if (self._latest is not None and int(t[0]) < self._latest) or (t.size > 1 and bool((t[1:] < t[:-1]).any())):
            raise ValueError(
                f"events must arrive in time order: a timestamp goes back (after {self._latest} us, this chunk spans "
                f"{int(t.min())}..{int(t.max())} us)"
            )
        self._latest = int(t[-1])
        x = events["x"].astype(np.int64)
        y = events["y"].astype(np.int64)
        width, height = self.sensor_size
        if x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height:
            raise ValueError(f"events outside the {width}x{height} sensor")
        if self._origin is None:
            self._origin = int(t[0])
        p = events["p"].astype(bool)  # a copy, like x and y: the caller may reuse its buffer
        before = int(np.searchsorted(t, self._origin, side="left"))  # before the origin: in no window
        if before:
            t, x, y, p = t[before:], x[before:], y[before:], p[before:]
            if t.size == 0:
                return []
        index = self._horizon(t)
        return self._emit(self._close(int(index[-1]), index, x, y, p))

    def advance(self, t_us: int) -> list[np.ndarray]:
        """The clock has reached ``t_us``: no event earlier than it will come. Return the frames of the windows that
        end at or before it (a camera that stays silent still gets its windows closed)."""
        if self._flushed:
            raise ValueError("the stream was flushed; call reset() to start a new one")
        if self._latest is not None and int(t_us) < self._latest:
            raise ValueError(f"advance({t_us}) goes back before an event already pushed at {self._latest} us")
        if self._origin is None or int(t_us) < self._origin:
            return []
        self._latest = int(t_us)
        upto = int(self._horizon(np.asarray([int(t_us)], dtype=np.int64))[0])
        empty = np.empty(0, np.int64)
        return self._emit(self._close(upto, empty, empty, empty, np.empty(0, bool)))

    def flush(self) -> list[np.ndarray]:
        """End the stream: the open window's frame if it holds events, and with ``n_windows`` zero frames up to
        ``n_windows`` frames in all. Call :meth:`reset` to bin another stream."""
        if self._flushed:
            return []
        if self.n_windows is not None:
            upto = self.n_windows
        else:
            upto = self._k + 1 if self._pending else self._k
        empty = np.empty(0, np.int64)
        frames = self._emit(self._close(upto, empty, empty, empty, np.empty(0, bool)))
        self._flushed = True
        return frames

    def _emit(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        self._emitted += len(frames)
        return frames

    def frames(self, chunks: Iterable[np.ndarray]) -> np.ndarray:
        """Bin a whole stream of event chunks: every frame, flushed, stacked ``[n, 2, H, W]`` (a convenience for
        replays and tests; a live loop calls :meth:`push` and uses each frame as it comes)."""
        out: list[np.ndarray] = []
        for chunk in chunks:
            out.extend(self.push(chunk))
        out.extend(self.flush())
        if not out:
            return np.zeros((0, *self.frame_shape), dtype=np.float32)
        return np.stack(out)

    def __repr__(self) -> str:
        extra = f", n_windows={self.n_windows}" if self.n_windows is not None else ""
        extra += f", end_us={self.end_us}" if self.end_us is not None else ""
        return (
            f"EventBinner(sensor_size={self.sensor_size}, window_us={self.window_us}, size={self.output_hw}, "
            f"origin_us={self._origin}{extra})"
        )

    # ----------------------------------------------------------------------------------------- from a dataset

    @staticmethod
    def _dataset_frames(name: str, params: Mapping[str, Any] | EventFramesSettings | None) -> ToFrames:
        """The :class:`ToFrames` the dataset ``name`` builds from ``params`` (its ``[data.params]``)."""
        if name not in _SPECS:
            raise ConfigError(f"no event dataset {name!r}; streaming frames exist for {sorted(_SPECS)}")
        spec = _SPECS[name]
        if isinstance(params, EventFramesSettings):
            s = params
        else:
            from sparsesnn.data.base import DATASETS

            try:
                s = validate_settings(DATASETS[name].Settings, name, dict(params or {}))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return _frames_spec(
            name, spec.sensor, spec.default_frames, s.n_frames, s.split_by, s.frame_duration_us, s.length, s.size
        )

    @classmethod
    def for_dataset(
        cls,
        name: str,
        params: Mapping[str, Any] | EventFramesSettings | None = None,
        *,
        sample_duration_us: int | None = None,
        origin_us: int | None = None,
    ) -> EventBinner:
        """A live binner with the framing of dataset ``name`` under ``params`` (the run config's ``[data.params]``,
        or its validated settings): the same sensor, output size, channels and counts, and a fixed window of

        * ``frame_duration_us`` when the dataset frames by duration (exact: the first ``length`` frames from the
          first event equal the dataset's sample);
        * ``sample_duration_us / n_frames`` when it splits each sample into ``n_frames`` equal time windows
          (approximate, see the module docstring); ``sample_duration_us`` defaults to the dataset's
          :data:`NOMINAL_DURATION_US` and is required where there is none;
        * ``sample_duration_us / n_frames`` for ``split_by="count"`` too, but only when ``sample_duration_us`` is
          given: a time window can only approximate equal event counts.

        The window is a :class:`~fractions.Fraction` where the division is not whole. The binner is endless (no
        ``n_windows``); ``time_steps`` says how many frames a sample of the dataset has.
        """
        frames = cls._dataset_frames(name, params)
        if frames.frame_duration_us is not None:
            window: int | Fraction = frames.frame_duration_us
        else:
            assert frames.n_frames is not None
            duration = sample_duration_us
            if duration is None and frames.split_by == "count":
                raise ConfigError(
                    f"{name}: split_by='count' frames a sample by the rank of each event among all of its events, "
                    "which a stream does not know in advance; pass sample_duration_us to approximate it by "
                    f"{frames.n_frames} equal time windows, or train with frame_duration_us"
                )
            if duration is None:
                duration = NOMINAL_DURATION_US.get(name)
            if duration is None:
                raise ConfigError(
                    f"{name}: its frames split each sample's own duration into {frames.n_frames} windows and its "
                    "samples have no fixed duration; pass sample_duration_us (the window is sample_duration_us / "
                    "n_frames), "
                    "or train with frame_duration_us for an exact live framing"
                )
            if isinstance(duration, bool) or not isinstance(duration, (int, np.integer)) or duration < 1:
                raise ConfigError(f"sample_duration_us must be a positive integer, got {duration!r}")
            window = Fraction(int(duration), frames.n_frames)
            window = int(window) if window.denominator == 1 else window
        return cls(
            frames.sensor_size,
            window,
            size=frames.output_hw,
            origin_us=origin_us,
            time_steps=frames.time_steps,
        )

    @classmethod
    def for_sample(
        cls,
        name: str,
        params: Mapping[str, Any] | EventFramesSettings | None,
        first_us: int,
        last_us: int,
    ) -> EventBinner:
        """A binner that replays dataset ``name``'s framing of one sample exactly, given the timestamps of the
        sample's first and last events: ``n_windows`` = the sample's T windows from ``first_us``, of
        ``Fraction(last_us - first_us, n_frames)`` with ``last_us`` counted in the last one (``split_by="time"``), or
        of ``frame_duration_us`` (with ``length``). Streaming the sample's events through it in any chunks gives
        exactly the dataset's frames. ``split_by="count"`` is refused (it is not a function of time)."""
        frames = cls._dataset_frames(name, params)
        first, last = int(first_us), int(last_us)
        if last < first:
            raise ValueError(f"last_us ({last}) is before first_us ({first})")
        if frames.frame_duration_us is not None:
            assert frames.length is not None
            return cls(
                frames.sensor_size,
                frames.frame_duration_us,
                size=frames.output_hw,
                origin_us=first,
                n_windows=frames.length,
            )
        assert frames.n_frames is not None
        if frames.split_by == "count":
            raise ConfigError(
                f"{name}: split_by='count' assigns frames by event rank, not time; a time binner cannot replay it"
            )
        span = last - first
        window = Fraction(span, frames.n_frames) if span else Fraction(1)  # span 0: every event is in window 0
        return cls(
            frames.sensor_size,
            window,
            size=frames.output_hw,
            origin_us=first,
            n_windows=frames.n_frames,
            end_us=last,
        )

    @classmethod
    def from_data_config(cls, data: Any, *, sample_duration_us: int | None = None) -> EventBinner:
        """:meth:`for_dataset` from a run config's ``[data]`` table: a mapping with ``name`` and ``params``, or an
        object with those attributes (``Config.data``). The test split's frames: ``augment`` is not applied."""
        if isinstance(data, Mapping):
            name, params = data.get("name"), data.get("params", {})
        else:
            name, params = getattr(data, "name", None), getattr(data, "params", {})
        if not isinstance(name, str):
            raise ConfigError(f"the [data] table has no dataset name, got {name!r}")
        params = {k: v for k, v in dict(params or {}).items()}
        return cls.for_dataset(name, params, sample_duration_us=sample_duration_us)
