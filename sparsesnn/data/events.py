"""Event-camera file decoders (and minimal writers): N-MNIST / ATIS binary, AEDAT 3.1, AEDAT 2.0 and AEDAT 4.

Every reader returns events as a numpy structured array of :data:`EVENT_DTYPE` with fields ``x``, ``y`` (pixel
column and row, int16), ``t`` (microseconds, int64) and ``p`` (polarity, bool: True = ON / brightness increase),
the layout Tonic uses (``tonic.io.events_struct``). Decoding is numpy-vectorised: no Python loop over events (the
AEDAT 3.1 reader loops over packets, each holding thousands of events).

Nothing is ever silently wrong: a missing or truncated file, a wrong header, a coordinate outside the sensor or a
timestamp that goes backwards raises :class:`~sparsesnn.core.errors.DatasetError` whose message names the file and the
byte offset of the offending record. Two documented repairs exist for real-world recordings:

* ``on_backwards``: ``"error"`` (default), ``"sort"`` (stable sort by time) or ``"drop"`` (drop every event whose
  timestamp is earlier than one before it, i.e. keep the events where the running maximum does not decrease).
* ``on_invalid``: ``"error"`` (default) or ``"drop"`` for events outside the sensor or with undefined address bits.

None of the 1,100 N-MNIST files or the 10 SLAYER ``.bs2`` DVS Gesture clips of the data set the tests read
(tests/conftest.py) has a backwards timestamp, an overflow marker or an out-of-range coordinate, so the defaults
decode them exactly as Tonic does.

Formats
-------
N-MNIST / ATIS binary (G. Orchard, A. Jayawant, G. K. Cohen, N. Thakor, "Converting Static Image Datasets to
Spiking Neuromorphic Datasets Using Saccades", Front. Neurosci. 9:437, 2015; the dataset page and its
``Read_Ndataset.m``): a headerless sequence of 40-bit (5-byte) records, byte 0 = x, byte 1 = y, byte 2 bit 7 =
polarity (1 = ON), byte 2 bits 6..0 = timestamp bits 22..16, byte 3 = bits 15..8, byte 4 = bits 7..0, timestamps
in microseconds. A record with y = 240 is a timestamp-overflow marker (``eventvision.py`` of the same authors, and
``tonic.io.read_mnist_file``): it adds 2**13 us to every later timestamp and is not an event. N-MNIST's sensor is
34x34. The SLAYER authors' ``.bs2`` files (S. B. Shrestha and G. Orchard, NeurIPS 2018) use the same record, e.g.
DVS128 Gesture clips on a 128x128 sensor (:func:`read_bs2`).

AEDAT 3.1 (iniVation, "AEDAT 3.1 file format", https://docs.inivation.com/software/software-advanced-usage/file-formats/aedat-3.1.html,
and libcaer ``events/common.h`` / ``events/polarity.h``): an ASCII header of lines starting with ``#``, the first
``#!AER-DAT3.1\\r\\n``, the last ``#!END-HEADER\\r\\n``; then packets, all little-endian. A packet is a 28-byte
header (int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset, int32 eventTSOverflow, int32
eventCapacity, int32 eventNumber, int32 eventValid) followed by eventCapacity * eventSize bytes of events, of which
the first eventNumber are used. Polarity events (eventType 1, eventSize 8, eventTSOffset 4) are a uint32 ``data``
(bit 0 valid mark, bit 1 polarity, bits 2..16 y, bits 17..31 x) and an int32 timestamp (31 bits); the full
timestamp is ``eventTSOverflow << 31 | timestamp``. Invalidated events (valid bit 0) and packets of other types
(special, frame, IMU, ...) are skipped. DVS128 Gesture (A. Amir et al., "A Low Power, Fully Event-Based Gesture
Recognition System", CVPR 2017) is stored this way, 128x128.

AEDAT 2.0 (jAER, https://docs.inivation.com/software/software-advanced-usage/file-formats/aedat-2.0.html): header
lines starting with ``#`` (the first ``#!AER-DAT2.0``), then big-endian records of (uint32 address, uint32
timestamp in us). A DVS128 address holds polarity in bit 0, the x field in bits 1..7, the y field in bits 8..14 and
an external-event flag in bit 15 (not a pixel event: dropped). Bits 16..31 must be zero. CIFAR10-DVS (H. Li, H. Liu,
X. Ji, G. Li, L. Shi, "CIFAR10-DVS: An Event-Stream Dataset for Object Classification", Front. Neurosci. 11:309,
2017) was recorded this way with a DVS128. How the address fields become image axes differs between readers, so it is
a parameter (``layout``): ``"tonic"`` (default, as ``tonic.io.read_dvs_128``: x = bits 8..14, y = bits 1..7,
p = bit 0), ``"spikingjelly"`` (SpikingJelly's CIFAR10-DVS loader: x = 127 - bits 8..14, y = 127 - bits 1..7,
p = 1 - bit 0, i.e. Tonic's image rotated by 180 degrees with the polarities swapped) or ``"raw"`` (x = bits 1..7,
y = bits 8..14, p = bit 0, the field names of the address format).

AEDAT 4 (iniVation, https://docs.inivation.com/software/software-advanced-usage/file-formats/aedat-4.0.html) is
decoded by the maintained ``aedat`` package (neuromorphs/aedat, the decoder Tonic uses), installed by the optional
extra ``pip install 'sparsesnn[aedat4]'``. ``aedat`` 2.3 aborts the interpreter on some malformed files (a Rust
panic), so by default it runs in a child process and such a file becomes a :class:`DatasetError`.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from sparsesnn.core.errors import DatasetError

__all__ = [
    "DECODER_VERSION",
    "EVENT_DTYPE",
    "AddressLayout",
    "OnBackwards",
    "OnInvalid",
    "make_events",
    "read_aedat2",
    "read_aedat4",
    "read_aedat31",
    "read_atis_bin",
    "read_bs2",
    "read_nmnist",
]

#: Bumped whenever a decoder's output for the same file could change; part of every frame-cache key.
DECODER_VERSION = 1

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])

OnBackwards = Literal["error", "sort", "drop"]
OnInvalid = Literal["error", "drop"]
AddressLayout = Literal["tonic", "spikingjelly", "raw"]

NMNIST_SENSOR = (34, 34)  # (width, height)
DVS128_SENSOR = (128, 128)

_ON_BACKWARDS = ("error", "sort", "drop")
_ON_INVALID = ("error", "drop")
_LAYOUTS = ("tonic", "spikingjelly", "raw")


def make_events(x: Any, y: Any, t: Any, p: Any) -> np.ndarray:
    """A structured event array of :data:`EVENT_DTYPE` from four equally long sequences.

    >>> make_events([1, 2], [3, 4], [10, 20], [True, False])["t"].tolist()
    [10, 20]
    """
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not x.shape == y.shape == t.shape == p.shape or x.ndim != 1:
        raise ValueError(f"x, y, t, p must be 1-D of equal length, got {x.shape}, {y.shape}, {t.shape}, {p.shape}")
    events = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    events["x"] = x
    events["y"] = y
    events["t"] = t
    events["p"] = p
    return events


# ------------------------------------------------------------------------------------------------------ shared checks


def _check_options(on_backwards: str, on_invalid: str) -> None:
    if on_backwards not in _ON_BACKWARDS:
        raise ValueError(f"on_backwards must be one of {_ON_BACKWARDS}, got {on_backwards!r}")
    if on_invalid not in _ON_INVALID:
        raise ValueError(f"on_invalid must be one of {_ON_INVALID}, got {on_invalid!r}")


def open_event_file(path: Path, what: str) -> BinaryIO:
    """``path`` opened for reading, or a :class:`DatasetError` that says what is wrong: missing, a directory,
    unreadable, or empty (an interrupted copy or download; a recording, even a silent one, has more than 0 bytes)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found (expected {what})") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: expected a file ({what}), found a directory") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file ({err})") from err
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise DatasetError(f"{path}: byte offset 0: empty file (0 bytes; expected {what}): an interrupted copy?")
    return fh


def _read_bytes(path: Path, what: str) -> bytes:
    with open_event_file(path, what) as fh:
        try:
            return fh.read()
        except OSError as err:
            raise DatasetError(f"{path}: cannot read the file ({err})") from err


def _at(offset: int | None) -> str:
    return f"byte offset {offset}" if offset is not None else "byte offset unknown (not reported by the decoder)"


def _finish(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    sensor: tuple[int, int] | None,
    on_backwards: str,
    on_invalid: str,
    offset_of: Callable[[int], int | None],
    what: str,
    invalid: np.ndarray | None = None,
    invalid_reason: str = "",
) -> np.ndarray:
    """Validate decoded fields and pack them: coordinates inside ``sensor`` (width, height), timestamps that never
    go backwards (or the chosen repair). ``offset_of(i)`` is the byte offset of event ``i`` in the file; ``invalid``
    marks events already known to be bad (undefined address bits), described by ``invalid_reason``."""
    bad = invalid
    reason = invalid_reason
    if sensor is not None and x.size:
        width, height = sensor
        signed = x.dtype.kind == "i" or y.dtype.kind == "i"
        if int(x.max()) >= width or int(y.max()) >= height or (signed and (int(x.min()) < 0 or int(y.min()) < 0)):
            outside = (x >= width) | (y >= height) | (x < 0) | (y < 0)
            first = int(np.argmax(outside))
            if bad is None or not bad[: first + 1].any():
                reason = f"coordinate (x={int(x[first])}, y={int(y[first])}) outside the {width}x{height} sensor"
            bad = outside if bad is None else (bad | outside)
    kept: np.ndarray | None = None  # decoded index of each surviving event, when some were dropped
    if bad is not None and bad.any():
        first = int(np.argmax(bad))
        if on_invalid == "error":
            raise DatasetError(
                f"{path}: {_at(offset_of(first))}: {what} record {first}: {reason} "
                f"({int(bad.sum())} such events; pass on_invalid='drop' to drop them)"
            )
        kept = np.flatnonzero(~bad)
        x, y, t, p = x[kept], y[kept], t[kept], p[kept]
    if t.size > 1:
        back = t[1:] < t[:-1]
        if back.any():
            if on_backwards == "error":
                i = int(np.argmax(back)) + 1
                j = int(kept[i]) if kept is not None else i
                raise DatasetError(
                    f"{path}: {_at(offset_of(j))}: {what} record {j}: timestamp {int(t[i])} us is earlier than the "
                    f"previous one ({int(t[i - 1])} us; {int(back.sum())} backward steps in the file); "
                    "pass on_backwards='sort' or 'drop' to repair"
                )
            if on_backwards == "sort":
                order = np.argsort(t, kind="stable")
            else:  # drop: keep the events that are not earlier than any event before them
                order = np.flatnonzero(t >= np.maximum.accumulate(t))
            x, y, t, p = x[order], y[order], t[order], p[order]
    events = np.empty(t.shape[0], dtype=EVENT_DTYPE)
    events["x"] = x
    events["y"] = y
    events["t"] = t
    events["p"] = p
    return events


# ------------------------------------------------------------------------------------------------ N-MNIST / ATIS 40-bit

_ATIS_OVERFLOW_Y = 240
_ATIS_OVERFLOW_US = 1 << 13
_ATIS_RECORD = np.dtype({"names": ["x", "word"], "formats": ["u1", ">u4"], "offsets": [0, 1], "itemsize": 5})


def _decode_atis(
    data: bytes | memoryview,
    path: Path,
    sensor: tuple[int, int] | None,
    on_backwards: str,
    on_invalid: str,
    offset: int = 0,
    overflows_before: int = 0,
) -> np.ndarray:
    """Decode whole 5-byte records. ``offset`` is the file offset of ``data[0]`` and ``overflows_before`` the number
    of overflow markers before it, for a reader that decodes a file chunk by chunk (:mod:`sparsesnn.data.stream`)."""
    if len(data) % 5:
        whole = len(data) - len(data) % 5
        raise DatasetError(
            f"{path}: byte offset {offset + whole}: truncated ATIS/N-MNIST file: {offset + len(data)} bytes is not a "
            f"whole number of 5-byte records ({len(data) % 5} trailing bytes)"
        )
    # One 5-byte record = x, then a big-endian 32-bit word y<<24 | p<<23 | t (23 bits): read it in one strided view.
    raw = np.frombuffer(data, dtype=_ATIS_RECORD)
    x = raw["x"]
    word = raw["word"].astype(np.uint32)
    y = (word >> 24).astype(np.uint8)
    p = (word & 0x800000).astype(bool)
    t = (word & 0x7FFFFF).astype(np.int64)
    if overflows_before:
        t += overflows_before * _ATIS_OVERFLOW_US
    index: np.ndarray | None = None
    overflow = y == _ATIS_OVERFLOW_Y if y.size and int(y.max()) >= _ATIS_OVERFLOW_Y else None
    if overflow is not None and overflow.any():
        t += np.cumsum(overflow, dtype=np.int64) * _ATIS_OVERFLOW_US
        index = np.flatnonzero(~overflow)
        x, y, t, p = x[index], y[index], t[index], p[index]

    def offset_of(i: int) -> int:
        return offset + 5 * (int(index[i]) if index is not None else i)

    return _finish(path, x, y, t, p, sensor, on_backwards, on_invalid, offset_of, "ATIS/N-MNIST")


def read_atis_bin(
    path: str | Path,
    sensor_size: tuple[int, int] | None = NMNIST_SENSOR,
    *,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> np.ndarray:
    """Decode an N-MNIST / ATIS 40-bit binary file (Orchard et al. 2015) into :data:`EVENT_DTYPE` events.

    ``sensor_size`` is ``(width, height)``; coordinates outside it are invalid (``None`` skips the check).
    Overflow markers (y = 240) add 2**13 us to later timestamps, as in Orchard's ``eventvision.py`` and Tonic.
    """
    _check_options(on_backwards, on_invalid)
    path = Path(path)
    return _decode_atis(_read_bytes(path, "an ATIS/N-MNIST binary file"), path, sensor_size, on_backwards, on_invalid)


def read_nmnist(
    path: str | Path, *, on_backwards: OnBackwards = "error", on_invalid: OnInvalid = "error"
) -> np.ndarray:
    """One N-MNIST sample (34x34 sensor): :func:`read_atis_bin` with ``sensor_size=(34, 34)``."""
    return read_atis_bin(path, NMNIST_SENSOR, on_backwards=on_backwards, on_invalid=on_invalid)


def read_bs2(
    path: str | Path,
    sensor_size: tuple[int, int] = DVS128_SENSOR,
    *,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> np.ndarray:
    """A SLAYER ``.bs2`` clip (the N-MNIST record; DVS128 Gesture clips are 128x128): :func:`read_atis_bin`."""
    return read_atis_bin(path, sensor_size, on_backwards=on_backwards, on_invalid=on_invalid)


# --------------------------------------------------------------------------------------------------------- AEDAT 3.1

_END_HEADER = b"#!END-HEADER\r\n"
_PACKET_HEADER = struct.Struct("<hhiiiiii")
_POLARITY_EVENT = 1
_AEDAT3_EVENT = np.dtype([("data", "<u4"), ("ts", "<i4")])


def _aedat3_header_end(data: bytes, path: Path) -> int:
    """Byte offset just after ``#!END-HEADER\\r\\n``; the first line must announce AEDAT 3.x, every line a ``#``."""
    first_end = data.find(b"\n")
    first = data[: first_end if first_end >= 0 else min(len(data), 64)]
    if not first.startswith(b"#!AER-DAT3."):
        raise DatasetError(
            f"{path}: byte offset 0: expected an AEDAT 3.1 header starting with '#!AER-DAT3.1', found {first[:40]!r}"
        )
    pos = 0
    while True:
        if pos >= len(data):
            raise DatasetError(f"{path}: byte offset {pos}: truncated header (no '#!END-HEADER' line)")
        if data[pos : pos + 1] != b"#":
            raise DatasetError(
                f"{path}: byte offset {pos}: expected a header line starting with '#' (or '#!END-HEADER'), "
                f"found {data[pos : pos + 20]!r}"
            )
        end = data.find(b"\n", pos)
        if end < 0:
            raise DatasetError(f"{path}: byte offset {pos}: truncated header line (no end of line, no '#!END-HEADER')")
        if data[pos : end + 1] == _END_HEADER:
            return end + 1
        pos = end + 1


def _aedat31_packet_header(head: bytes | memoryview, path: Path, pos: int) -> tuple[int, int, int, int, int]:
    """Check the 28-byte packet header ``head`` found at byte ``pos``: ``(eventType, eventTSOverflow, eventNumber,
    eventCapacity, eventSize)``. A polarity packet must hold 8-byte events with the timestamp at offset 4."""
    if len(head) < _PACKET_HEADER.size:
        raise DatasetError(
            f"{path}: byte offset {pos}: truncated packet header ({len(head)} of {_PACKET_HEADER.size} bytes)"
        )
    etype, _source, esize, tsoffset, tsoverflow, capacity, number, valid = _PACKET_HEADER.unpack_from(head, 0)
    if esize <= 0 or capacity < 0 or not 0 <= number <= capacity or not 0 <= valid <= number or tsoverflow < 0:
        raise DatasetError(
            f"{path}: byte offset {pos}: corrupt packet header (eventType={etype}, eventSize={esize}, "
            f"eventTSOverflow={tsoverflow}, eventCapacity={capacity}, eventNumber={number}, eventValid={valid}); "
            "expected eventSize > 0, 0 <= eventValid <= eventNumber <= eventCapacity, eventTSOverflow >= 0"
        )
    if etype == _POLARITY_EVENT and (esize != 8 or tsoffset != 4):
        raise DatasetError(
            f"{path}: byte offset {pos}: polarity packet with eventSize={esize}, eventTSOffset={tsoffset}; "
            "expected 8 and 4"
        )
    return etype, tsoverflow, number, capacity, esize


def _aedat31_check_payload(path: Path, pos: int, capacity: int, esize: int, remaining: int) -> None:
    """The packet at byte ``pos`` declares ``capacity`` events of ``esize`` bytes; ``remaining`` bytes follow it."""
    if capacity * esize > remaining:
        raise DatasetError(
            f"{path}: byte offset {pos}: truncated packet: its header declares {capacity} events of {esize} "
            f"bytes ({capacity * esize} bytes) but only {remaining} bytes remain"
        )


def _aedat31_fields(
    word: np.ndarray, ts: np.ndarray, overflow: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, t, p)`` of AEDAT 3.1 polarity events from their ``data`` words, 31-bit timestamps and the packets'
    eventTSOverflow (per event, or one for all)."""
    t = (np.asarray(overflow, dtype=np.int64) << 31) | ts.astype(np.int64)
    x = ((word >> 17) & 0x7FFF).astype(np.int16)
    y = ((word >> 2) & 0x7FFF).astype(np.int16)
    p = ((word >> 1) & 1).astype(bool)
    return x, y, t, p


def _finish_aedat31(
    path: Path,
    fields: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    negative: np.ndarray,
    sensor_size: tuple[int, int] | None,
    on_backwards: str,
    on_invalid: str,
    offset_of: Callable[[int], int | None],
) -> np.ndarray:
    """:func:`_finish` for AEDAT 3.1 polarity events, whose negative 32-bit timestamps are invalid."""
    x, y, t, p = fields
    return _finish(
        path,
        x,
        y,
        t,
        p,
        sensor_size,
        on_backwards,
        on_invalid,
        offset_of,
        "AEDAT 3.1 polarity",
        invalid=negative if negative.any() else None,
        invalid_reason="negative 32-bit timestamp (expected 31 bits)",
    )


def read_aedat31(
    path: str | Path,
    sensor_size: tuple[int, int] | None = DVS128_SENSOR,
    *,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> np.ndarray:
    """Decode the polarity events of an AEDAT 3.1 file (iniVation spec; DVS128 Gesture, Amir et al. 2017).

    Every packet header is checked (sizes that fit in the file, eventNumber <= eventCapacity, polarity packets of
    8-byte events with the timestamp at offset 4); events with the valid mark cleared and packets of other event
    types are skipped. ``sensor_size`` is ``(width, height)`` (128x128 for the DVS128), ``None`` skips the check.
    """
    _check_options(on_backwards, on_invalid)
    path = Path(path)
    data = _read_bytes(path, "an AEDAT 3.1 file")
    pos = _aedat3_header_end(data, path)
    starts: list[int] = []
    counts: list[int] = []
    overflows: list[int] = []
    size = len(data)
    while pos < size:
        etype, tsoverflow, number, capacity, esize = _aedat31_packet_header(
            data[pos : pos + _PACKET_HEADER.size], path, pos
        )
        payload = pos + _PACKET_HEADER.size
        _aedat31_check_payload(path, pos, capacity, esize, size - payload)
        nbytes = capacity * esize
        if etype == _POLARITY_EVENT and number:
            starts.append(payload)
            counts.append(number)
            overflows.append(tsoverflow)
        pos = payload + nbytes
    if starts:
        raw = np.concatenate([np.frombuffer(data, _AEDAT3_EVENT, n, s) for s, n in zip(starts, counts, strict=True)])
    else:
        raw = np.empty(0, dtype=_AEDAT3_EVENT)
    word = raw["data"]
    ts = raw["ts"]
    valid_mark = (word & 1).astype(bool)
    keep = np.flatnonzero(valid_mark) if not valid_mark.all() else None
    overflow = np.repeat(np.asarray(overflows, dtype=np.int64), counts) if starts else np.empty(0, np.int64)
    if keep is not None:
        word, ts, overflow = word[keep], ts[keep], overflow[keep]
    negative = ts < 0
    x, y, t, p = _aedat31_fields(word, ts, overflow)

    def offset_of(i: int) -> int:
        j = int(keep[i]) if keep is not None else i
        packet = int(np.searchsorted(np.cumsum(counts), j, side="right"))
        before = int(np.sum(counts[:packet]))
        return starts[packet] + 8 * (j - before)

    return _finish_aedat31(path, (x, y, t, p), negative, sensor_size, on_backwards, on_invalid, offset_of)


# --------------------------------------------------------------------------------------------------------- AEDAT 2.0

_AEDAT2_RECORD = np.dtype([("address", ">u4"), ("t", ">u4")])
_DVS128_EXTERNAL = 1 << 15


def _aedat2_data_start(data: bytes, path: Path) -> int:
    if not data.startswith(b"#!AER-DAT2."):
        first = data[: data.find(b"\n") if 0 <= data.find(b"\n") < 64 else 40]
        raise DatasetError(
            f"{path}: byte offset 0: expected a jAER AEDAT 2.0 header starting with '#!AER-DAT2.0', found {first!r}"
        )
    pos = 0
    while pos < len(data) and data[pos : pos + 1] == b"#":
        end = data.find(b"\n", pos)
        if end < 0:
            raise DatasetError(f"{path}: byte offset {pos}: truncated header line (no end of line)")
        pos = end + 1
    return pos


def read_aedat2(
    path: str | Path,
    layout: AddressLayout = "tonic",
    *,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
) -> np.ndarray:
    """Decode a jAER AEDAT 2.0 file of DVS128 addresses (CIFAR10-DVS, Li et al. 2017) into a 128x128 event array.

    ``layout`` maps the address fields to image axes (see the module docstring; ``"tonic"`` matches Tonic's
    ``read_dvs_128``). External events (address bit 15) are not pixel events and are dropped; an address with any
    of bits 16..31 set is invalid. Timestamps are the file's uint32 microseconds.
    """
    _check_options(on_backwards, on_invalid)
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    path = Path(path)
    data = _read_bytes(path, "a jAER AEDAT 2.0 file")
    start = _aedat2_data_start(data, path)
    body = len(data) - start
    if body % 8:
        whole = start + body - body % 8
        raise DatasetError(
            f"{path}: byte offset {whole}: truncated AEDAT 2.0 file: {body} data bytes is not a whole number of "
            f"8-byte (address, timestamp) records ({body % 8} trailing bytes)"
        )
    rec = np.frombuffer(data, dtype=_AEDAT2_RECORD, count=body // 8, offset=start)
    address = rec["address"].astype(np.uint32)
    t = rec["t"].astype(np.int64)
    pixel = (address & _DVS128_EXTERNAL) == 0
    index: np.ndarray | None = None
    if not pixel.all():
        index = np.flatnonzero(pixel)
        address, t = address[index], t[index]
    undefined = address > 0xFFFF
    bits_a = ((address >> 1) & 0x7F).astype(np.int16)  # bits 1..7
    bits_b = ((address >> 8) & 0x7F).astype(np.int16)  # bits 8..14
    bit0 = (address & 1).astype(bool)
    if layout == "tonic":
        x, y, p = bits_b, bits_a, bit0
    elif layout == "spikingjelly":
        x, y, p = 127 - bits_b, 127 - bits_a, ~bit0
    else:
        x, y, p = bits_a, bits_b, bit0

    def offset_of(i: int) -> int:
        return start + 8 * (int(index[i]) if index is not None else i)

    return _finish(
        path,
        x,
        y,
        t,
        p,
        DVS128_SENSOR,
        on_backwards,
        on_invalid,
        offset_of,
        "AEDAT 2.0",
        invalid=undefined if undefined.any() else None,
        invalid_reason="address with bits 16..31 set (not a DVS128 address)",
    )


# ----------------------------------------------------------------------------------------------------------- AEDAT 4

AEDAT4_EXTRA_HINT = "pip install 'sparsesnn[aedat4]' (the maintained 'aedat' decoder package)"

# Runs in a child interpreter: decode with ``aedat`` and write an .npz (events of the first event stream, sensor size)
# to stdout. Exit 3 = aedat missing, 2 = a Python-level decoding error (message on stderr).
_AEDAT4_CHILD = """
import io, sys
import numpy as np
try:
    import aedat
except ImportError:
    sys.exit(3)
try:
    decoder = aedat.Decoder(sys.argv[1])
    streams = decoder.id_to_stream()
    ids = sorted(i for i, s in streams.items() if s.get("type") == "events")
    if not ids:
        raise ValueError("no event stream in this AEDAT 4 file (streams: %r)" % (streams,))
    target = ids[0]
    chunks = [p["events"] for p in decoder if p.get("stream_id") == target and "events" in p]
except Exception as err:
    sys.stderr.write("%s: %s" % (type(err).__name__, err))
    sys.exit(2)
dtype = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("p", "?")])
raw = np.concatenate(chunks) if chunks else np.empty(0, dtype)
out = np.empty(raw.shape[0], dtype)
for name, source in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on" if "on" in (raw.dtype.names or ()) else "p")):
    out[name] = raw[source]
size = [streams[target].get("width") or 0, streams[target].get("height") or 0]
buf = io.BytesIO()
np.savez(buf, events=out, size=np.asarray(size, dtype=np.int64))
sys.stdout.buffer.write(buf.getvalue())
"""


def _aedat4_in_process(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    import aedat  # type: ignore[import-not-found]

    decoder = aedat.Decoder(str(path))
    streams = decoder.id_to_stream()
    ids = sorted(i for i, s in streams.items() if s.get("type") == "events")
    if not ids:
        raise DatasetError(f"{path}: no event stream in this AEDAT 4 file (streams: {streams})")
    target = ids[0]
    chunks = [pkt["events"] for pkt in decoder if pkt.get("stream_id") == target and "events" in pkt]
    raw = np.concatenate(chunks) if chunks else np.empty(0, dtype=[("t", "<u8"), ("x", "<u2"), ("y", "<u2")])
    pol = "on" if "on" in (raw.dtype.names or ()) else "p"
    out = np.empty(raw.shape[0], dtype=[("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("p", "?")])
    for name, source in (("t", "t"), ("x", "x"), ("y", "y"), ("p", pol)):
        if raw.size:
            out[name] = raw[source]
    width, height = streams[target].get("width"), streams[target].get("height")
    return out, ((int(width), int(height)) if width and height else None)


def _aedat4_isolated(path: Path, timeout: float) -> tuple[np.ndarray, tuple[int, int] | None]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _AEDAT4_CHILD, str(path)], capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise DatasetError(f"{path}: the AEDAT 4 decoder did not finish within {timeout:g} s") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot start the AEDAT 4 decoder process ({err})") from err
    if done.returncode == 3:
        raise ImportError(f"reading AEDAT 4 files needs the optional extra: {AEDAT4_EXTRA_HINT}")
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        if done.returncode == 2:
            why = message[-1] if message else "unknown error"
        else:
            why = f"the decoder crashed (exit status {done.returncode}); the file is malformed"
        raise DatasetError(f"{path}: byte offset unknown: cannot decode AEDAT 4 ({why})")
    try:
        with np.load(io.BytesIO(done.stdout), allow_pickle=False) as npz:
            events, size = npz["events"], npz["size"]
    except Exception as err:
        raise DatasetError(f"{path}: the AEDAT 4 decoder returned unreadable output ({err})") from err
    return events, ((int(size[0]), int(size[1])) if size[0] and size[1] else None)


def read_aedat4(
    path: str | Path,
    *,
    on_backwards: OnBackwards = "error",
    on_invalid: OnInvalid = "error",
    isolate: bool = True,
    timeout: float = 600.0,
) -> np.ndarray:
    """Decode the first event stream of an AEDAT 4 file with the ``aedat`` package (optional extra ``aedat4``).

    The sensor size comes from the stream's description in the file. Raises ``ImportError`` naming the extra when
    ``aedat`` is not installed; every decoding problem is a :class:`DatasetError` naming the file (``aedat`` reports
    no byte offsets, so only a wrong magic number gets one: 0).

    ``isolate`` (default True) decodes in a child interpreter: ``aedat`` 2.3 aborts the whole process on some
    malformed files (a Rust panic while reporting an error), which no ``except`` can catch; isolated, such a file
    is a :class:`DatasetError`. This costs one interpreter start (about 0.1-0.3 s) per file; ``isolate=False``
    decodes in this process, for trusted files.
    """
    _check_options(on_backwards, on_invalid)
    path = Path(path)
    head = _read_bytes(path, "an AEDAT 4 file")[:14]
    if not head.startswith(b"#!AER-DAT4."):
        raise DatasetError(f"{path}: byte offset 0: expected the AEDAT 4 magic '#!AER-DAT4.0\\r\\n', found {head!r}")
    if isolate:
        raw, sensor = _aedat4_isolated(path, timeout)
    else:
        if importlib.util.find_spec("aedat") is None:
            raise ImportError(f"reading AEDAT 4 files needs the optional extra: {AEDAT4_EXTRA_HINT}")
        try:
            raw, sensor = _aedat4_in_process(path)
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(
                f"{path}: byte offset unknown: cannot decode AEDAT 4 ({type(err).__name__}: {err})"
            ) from err
        except BaseException as err:  # pyo3's PanicException derives from BaseException
            if type(err).__name__ != "PanicException":
                raise
            raise DatasetError(f"{path}: byte offset unknown: cannot decode AEDAT 4 (decoder panic: {err})") from None
    return _finish(
        path,
        raw["x"].astype(np.int16),
        raw["y"].astype(np.int16),
        raw["t"].astype(np.int64),
        raw["p"].astype(bool),
        sensor,
        on_backwards,
        on_invalid,
        lambda i: None,
        "AEDAT 4 event",
    )
