"""Writers of the event formats that sparsesnn reads (N-MNIST/ATIS, AEDAT 3.1, jAER AEDAT 2.0), for the tests only:
they build files with known content (overflows, invalid events, extra packets) to check the readers against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsesnn.data.events import (
    _AEDAT2_RECORD,
    _AEDAT3_EVENT,
    _ATIS_OVERFLOW_Y,
    _END_HEADER,
    _LAYOUTS,
    _PACKET_HEADER,
    AddressLayout,
)


def write_atis_bin(path: str | Path, events: np.ndarray) -> None:
    """Write events as N-MNIST 40-bit records (x, y < 256 but not y = 240, 0 <= t < 2**23); for tests and tools."""
    x, y, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "t"))
    p = np.asarray(events["p"], dtype=bool)
    if x.size and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255 or (y == _ATIS_OVERFLOW_Y).any()):
        raise ValueError("ATIS records hold 0 <= x, y <= 255 and y != 240")
    if t.size and (t.min() < 0 or t.max() >= 1 << 23):
        raise ValueError("ATIS records hold timestamps 0 <= t < 2**23 us (use overflow markers for longer files)")
    raw = np.empty((x.size, 5), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = ((t >> 16) & 0x7F) | (p.astype(np.int64) << 7)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    Path(path).write_bytes(raw.tobytes())


def write_aedat31(
    path: str | Path,
    events: np.ndarray,
    *,
    packet_size: int = 4096,
    invalid: np.ndarray | None = None,
    extra_packets: bool = False,
    source: int = 1,
) -> None:
    """Write polarity events as an AEDAT 3.1 file (for tests and tools), following the iniVation spec.

    Events are split into packets of at most ``packet_size`` events and wherever ``t >> 31`` (the packet's
    eventTSOverflow) changes. ``invalid`` (bool per event) writes those events with the valid mark cleared.
    ``extra_packets`` adds a special-event packet (type 0) and a 36-byte-event IMU6 packet (type 3) before the
    polarity data and an empty polarity packet at the end, all of which a reader must skip.
    """
    x, y, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "t"))
    p = np.asarray(events["p"], dtype=bool)
    if x.size and (x.min() < 0 or x.max() > 0x7FFF or y.min() < 0 or y.max() > 0x7FFF or t.min() < 0):
        raise ValueError("AEDAT 3.1 polarity events hold 0 <= x, y <= 32767 and t >= 0")
    bad = np.zeros(x.size, dtype=bool) if invalid is None else np.asarray(invalid, dtype=bool)
    word = (x << 17) | (y << 2) | (p.astype(np.int64) << 1) | (~bad).astype(np.int64)
    rec = np.empty(x.size, dtype=_AEDAT3_EVENT)
    rec["data"] = word.astype(np.uint32)
    rec["ts"] = (t & 0x7FFFFFFF).astype(np.int32)
    high = t >> 31
    chunks: list[bytes] = [
        b"#!AER-DAT3.1\r\n",
        b"#Format: RAW\r\n",
        f"#Source {source}: DVS128\r\n".encode(),
        b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n",
        _END_HEADER,
    ]
    if extra_packets:
        special = np.zeros(2, dtype=_AEDAT3_EVENT)
        special["data"] = [(1 << 1) | 1, (2 << 1) | 1]  # a timestamp reset and a wrap marker, both valid
        chunks.append(_PACKET_HEADER.pack(0, source, 8, 4, 0, 2, 2, 2) + special.tobytes())
        chunks.append(_PACKET_HEADER.pack(3, source, 36, 4, 0, 1, 1, 1) + bytes(36))
    start = 0
    while start < x.size:
        stop = min(start + packet_size, x.size)
        stop = start + int(np.searchsorted(high[start:stop], high[start], side="right"))
        block = rec[start:stop]
        n_valid = int((~bad[start:stop]).sum())
        chunks.append(_PACKET_HEADER.pack(1, source, 8, 4, int(high[start]), stop - start, stop - start, n_valid))
        chunks.append(block.tobytes())
        start = stop
    if extra_packets:
        chunks.append(_PACKET_HEADER.pack(1, source, 8, 4, 0, 0, 0, 0))
    Path(path).write_bytes(b"".join(chunks))


def write_aedat2(
    path: str | Path, events: np.ndarray, layout: AddressLayout = "tonic", *, external: np.ndarray | None = None
) -> None:
    """Write 128x128 events as a jAER AEDAT 2.0 file of DVS128 addresses (inverse of :func:`read_aedat2`).

    ``external`` (bool per event) additionally sets bit 15, the DVS128 external-event flag.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    x, y, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "t"))
    p = np.asarray(events["p"], dtype=bool).astype(np.int64)
    if x.size and (x.min() < 0 or x.max() > 127 or y.min() < 0 or y.max() > 127 or t.min() < 0 or t.max() >= 2**32):
        raise ValueError("DVS128 events hold 0 <= x, y <= 127 and 0 <= t < 2**32")
    if layout == "tonic":
        bits_a, bits_b, bit0 = y, x, p
    elif layout == "spikingjelly":
        bits_a, bits_b, bit0 = 127 - y, 127 - x, 1 - p
    else:
        bits_a, bits_b, bit0 = x, y, p
    address = (bits_b << 8) | (bits_a << 1) | bit0
    if external is not None:
        address |= np.asarray(external, dtype=np.int64) << 15
    rec = np.empty(x.size, dtype=_AEDAT2_RECORD)
    rec["address"] = address
    rec["t"] = t
    header = (
        b"#!AER-DAT2.0\r\n"
        b"# This is a raw AE data file - do not edit\r\n"
        b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
        b"# Timestamps tick is 1 us\r\n"
    )
    Path(path).write_bytes(header + rec.tobytes())
