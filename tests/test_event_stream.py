"""Streaming event input (sparsesnn.data.stream): the incremental readers give the whole-file readers' events chunk
by chunk, and the binner, fed the real shared files in small chunks that do not line up with its windows, gives
frames equal to the dataset loaders' -- for every chunking."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sparsesnn.core.errors import ConfigError, DatasetError
from sparsesnn.data import build_dataset
from sparsesnn.data.events import make_events, read_aedat4, read_aedat31, read_bs2, read_nmnist
from sparsesnn.data.frames import ToFrames
from sparsesnn.data.stream import (
    EventBinner,
    iter_aedat4,
    iter_aedat31,
    iter_bs2,
    iter_events,
    iter_nmnist,
)
from tests.conftest import DATA
from tests.event_writers import write_aedat31, write_atis_bin

NMNIST = DATA / "nmnist"
BS2 = DATA / "dvs_gesture" / "slayer_bs2_1450ms"
AEDAT4_SAMPLE = DATA / "aedat4_sample" / "tonic_sample.aedat4"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
needs_nmnist = pytest.mark.skipif(not (NMNIST / "Test").is_dir(), reason=f"N-MNIST subset not found at {NMNIST}")
needs_bs2 = pytest.mark.skipif(not BS2.is_dir(), reason=f"SLAYER .bs2 clips not found at {BS2}")
needs_aedat4 = pytest.mark.skipif(
    importlib.util.find_spec("aedat") is None or not AEDAT4_SAMPLE.is_file(),
    reason="the aedat extra or the AEDAT 4 sample is absent",
)


def rechunk(chunks: Iterator[np.ndarray], rng: np.random.Generator, most: int) -> Iterator[np.ndarray]:
    """The events of ``chunks`` again, cut at random places into pieces of 1..``most`` events (empty ones too)."""
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            stop = start + int(rng.integers(0, most + 1))
            yield chunk[start:stop]
            start = max(stop, start)


def padded(frames: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` frames, zero frames appended where the stream had fewer (a dataset's ``length``)."""
    out = np.zeros((length, *frames.shape[1:]), dtype=np.float32)
    out[: min(length, len(frames))] = frames[:length]
    return out


def same_events(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and all(np.array_equal(a[k].astype(np.int64), b[k].astype(np.int64)) for k in "xytp")


# --------------------------------------------------------------------------------------- the binner on its own


def test_windows_close_when_time_passes_them_and_the_frame_entry_is_a_count() -> None:
    b = EventBinner(sensor_size=(4, 3), window_us=10)
    assert b.push(make_events([0, 1], [0, 2], [100, 105], [True, False])) == []  # window 0 = [100, 110) still open
    assert b.origin_us == 100
    out = b.push(make_events([3], [1], [131], [True]))  # t = 131 is window 3: windows 0, 1, 2 are complete
    assert len(out) == 3 and all(f.shape == (2, 3, 4) and f.dtype == np.float32 for f in out)
    assert out[0][1, 0, 0] == 1 and out[0][0, 2, 1] == 1 and out[0].sum() == 2
    assert out[1].sum() == 0 and out[2].sum() == 0
    assert b.advance(139) == [] and len(b.advance(140)) == 1  # a silent camera: the clock closes window 3
    assert b.push(make_events([2, 2], [0, 0], [140, 140], [False, False])) == []
    last = b.flush()
    assert len(last) == 1 and last[0][0, 0, 2] == 2 and b.windows_emitted == 5
    assert b.flush() == []
    with pytest.raises(ValueError, match="reset"):
        b.push(make_events([0], [0], [200], [True]))
    b.reset(origin_us=0)
    assert len(b.push(make_events([0], [0], [25], [True]))) == 2 and b.origin_us == 0


def test_order_sensor_origin_and_sample_windows() -> None:
    b = EventBinner(sensor_size=(4, 4), window_us=10)
    b.push(make_events([0], [0], [50], [True]))
    with pytest.raises(ValueError, match="time order"):
        b.push(make_events([0], [0], [49], [True]))
    with pytest.raises(ValueError, match="time order"):
        b.push(make_events([0, 0], [0, 0], [60, 55], [True, True]))
    with pytest.raises(ValueError, match="outside the 4x4 sensor"):
        b.push(make_events([4], [0], [70], [True]))
    with pytest.raises(ValueError, match="goes back"):
        b.advance(10)
    # A sample of 3 windows from origin 100: events before the origin and from t = 130 on are left out, flush pads.
    s = EventBinner(sensor_size=(4, 4), window_us=10, origin_us=100, n_windows=3)
    assert s.push(make_events([0, 1], [0, 0], [90, 105], [True, True])) == []
    frames = s.frames([make_events([2, 3], [0, 0], [125, 130], [True, True])])
    assert frames.shape == (3, 2, 4, 4) and frames.sum() == 2 and frames[2, 1, 0, 2] == 1
    # end_us: the closed right edge of the last window (split_by="time"'s last bin), later events left out.
    closed = EventBinner(sensor_size=(4, 4), window_us=Fraction(30, 4), origin_us=0, n_windows=4, end_us=30)
    got = closed.frames([make_events([0, 1, 2], [0, 0, 0], [0, 30, 31], [True, True, True])])
    assert got[:, 1, 0].sum(axis=0).tolist() == [1, 1, 0, 0] and got[3].sum() == 1
    want = ToFrames(sensor_size=(4, 4), n_frames=4)(make_events([0, 1], [0, 0], [0, 30], [True, True]))
    assert np.array_equal(got, want)
    assert EventBinner(sensor_size=(4, 4), window_us=5, n_windows=2).frames([]).shape == (2, 2, 4, 4)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="window_us"):
            EventBinner(sensor_size=(4, 4), window_us=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs n_windows"):
        EventBinner(sensor_size=(4, 4), window_us=5, end_us=3)
    with pytest.raises(ConfigError, match="larger than"):
        EventBinner(sensor_size=(4, 4), window_us=5, size=8)


def test_random_streams_equal_to_frames_for_any_chunking() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    ev = make_events(
        rng.integers(0, 34, n), rng.integers(0, 34, n), np.sort(rng.integers(7, 300_007, n)), rng.integers(0, 2, n)
    )
    t0, t1 = int(ev["t"][0]), int(ev["t"][-1])
    for spec, binner in (
        (
            ToFrames(sensor_size=(34, 34), n_frames=7, size=(10, 15)),  # a fractional window and area pooling
            lambda: EventBinner((34, 34), Fraction(t1 - t0, 7), size=(10, 15), origin_us=t0, n_windows=7, end_us=t1),
        ),
        (
            ToFrames(sensor_size=(34, 34), frame_duration_us=9_999, length=40, size=17),
            lambda: EventBinner((34, 34), 9_999, size=17, origin_us=t0, n_windows=40),
        ),
        (
            ToFrames(sensor_size=(34, 34), frame_duration_us=12_345),  # no length: up to the last event's window
            lambda: EventBinner((34, 34), 12_345),
        ),
    ):
        want = spec(ev)
        for most in (1, 13, 500, n):
            assert np.array_equal(binner().frames(rechunk(iter([ev]), rng, most)), want), (spec, most)


def test_dataset_constructors_and_what_they_refuse() -> None:
    nmnist = EventBinner.for_dataset("nmnist")
    assert nmnist.window_us == 37_500 and nmnist.time_steps == 8 and nmnist.output_hw == (34, 34)
    odd = EventBinner.for_dataset("nmnist", {"n_frames": 7, "size": 17})
    assert odd.window_us == Fraction(300_000, 7) and odd.frame_shape == (2, 17, 17)
    exact = EventBinner.for_dataset("dvs_gesture", {"frame_duration_us": 50_000, "length": 20, "size": 48})
    assert exact.window_us == 50_000 and exact.time_steps == 20 and exact.n_windows is None
    with pytest.raises(ConfigError, match="no fixed duration; pass sample_duration_us"):
        EventBinner.for_dataset("dvs_gesture", {"size": 48})
    assert EventBinner.for_dataset("dvs_gesture", {}, sample_duration_us=8_000_000).window_us == 500_000
    with pytest.raises(ConfigError, match="split_by='count'"):
        EventBinner.for_dataset("nmnist", {"split_by": "count"})
    assert EventBinner.for_dataset("nmnist", {"split_by": "count"}, sample_duration_us=320_000).window_us == 40_000
    with pytest.raises(ConfigError, match="not time"):
        EventBinner.for_sample("nmnist", {"split_by": "count"}, 0, 10)
    with pytest.raises(ConfigError, match="no event dataset 'mnist'"):
        EventBinner.for_dataset("mnist")
    with pytest.raises(ConfigError, match="n_frames"):
        EventBinner.for_dataset("nmnist", {"n_frames": 0})
    with pytest.raises(ConfigError, match="needs length"):
        EventBinner.for_dataset("nmnist", {"frame_duration_us": 1000})
    # A run's [data] table, as the shipped configs write it.
    for config, window, hw in (("nmnist_convnet.toml", 37_500, (34, 34)), ("dvs_gesture_vggsnn.toml", None, (48, 48))):
        data = tomllib.loads((CONFIGS / config).read_text())["data"]
        if window is None:
            with pytest.raises(ConfigError, match="sample_duration_us"):
                EventBinner.from_data_config(data)
            binner = EventBinner.from_data_config(data, sample_duration_us=6_400_000)
            window = 400_000
        else:
            binner = EventBinner.from_data_config(data)
        assert binner.window_us == window and binner.output_hw == hw and binner.time_steps == data["time_steps"]


# -------------------------------------------------------------------------------------------------- the readers


def test_atis_stream_carries_overflow_markers_backward_drops_and_offsets(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 3000
    ev = make_events(
        rng.integers(0, 34, n), rng.integers(0, 34, n), np.sort(rng.integers(0, 300_000, n)), rng.integers(0, 2, n)
    )
    path = tmp_path / "s.bin"
    write_atis_bin(path, ev)
    raw = path.read_bytes()
    marker = bytes([0, 240, 0, 0, 0])
    path.write_bytes(raw[: 5 * 1000] + marker + raw[5 * 1000 : 5 * 2000] + marker + raw[5 * 2000 :])
    whole = read_nmnist(path)
    for chunk in (1, 7, 999, 1000, 1001, 5000):
        assert same_events(np.concatenate(list(iter_nmnist(path, chunk_events=chunk))), whole)
    ranged = np.concatenate(list(iter_nmnist(path, chunk_events=64, start_us=100_000, end_us=200_000)))
    assert same_events(ranged, whole[(whole["t"] >= 100_000) & (whole["t"] < 200_000)])
    # Backward timestamps across a chunk boundary: "error" names the place, "drop" equals the whole-file repair.
    back = tmp_path / "back.bin"
    write_atis_bin(back, make_events([1, 2, 3, 4, 5, 6], [1] * 6, [10, 20, 15, 30, 25, 40], [1, 0, 1, 0, 1, 0]))
    with pytest.raises(DatasetError, match=r"back\.bin: the records from byte offset 10: timestamp 15 us is earlier"):
        list(iter_nmnist(back, chunk_events=2))
    for chunk in (1, 2, 3, 6):
        dropped = np.concatenate(list(iter_nmnist(back, chunk_events=chunk, on_backwards="drop")))
        assert same_events(dropped, read_nmnist(back, on_backwards="drop"))
    with pytest.raises(ValueError, match="cannot be streamed"):
        next(iter_nmnist(back, on_backwards="sort"))
    cut = tmp_path / "cut.bin"
    cut.write_bytes(raw[:-2])
    with pytest.raises(DatasetError, match=r"cut\.bin: byte offset 14995: truncated .* 14998 bytes .*3 trailing"):
        list(iter_nmnist(cut, chunk_events=100))
    wide = tmp_path / "wide.bin"
    write_atis_bin(wide, make_events([1, 2, 40], [1, 1, 1], [1, 2, 3], [0, 1, 0]))
    with pytest.raises(DatasetError, match=r"wide\.bin: byte offset 10: .*record 0: coordinate \(x=40"):
        list(iter_nmnist(wide, chunk_events=2))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    for reader in (iter_nmnist, iter_aedat31, iter_aedat4):
        with pytest.raises(DatasetError, match=r"empty\.bin: byte offset 0: empty file"):
            next(reader(empty))
    with pytest.raises(DatasetError, match="file not found"):
        next(iter_nmnist(tmp_path / "missing.bin"))
    with pytest.raises(ValueError, match="unknown event file suffix"):
        iter_events(tmp_path / "x.dat")


def test_aedat31_stream_packets_ranges_and_early_stop(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 4000
    t = np.sort(rng.integers(0, 1 << 33, n))  # crosses eventTSOverflow (t >> 31) several times
    ev = make_events(rng.integers(0, 128, n), rng.integers(0, 128, n), t, rng.integers(0, 2, n))
    path = tmp_path / "rec.aedat"
    invalid = rng.random(n) < 0.05
    write_aedat31(path, ev, packet_size=97, invalid=invalid, extra_packets=True)
    whole = read_aedat31(path)
    for chunk in (1, 50, 1000, 10_000):
        assert same_events(np.concatenate(list(iter_aedat31(path, chunk_events=chunk))), whole)
    lo, hi = int(t[1000]), int(t[3000])
    ranged = np.concatenate(list(iter_aedat31(path, chunk_events=64, start_us=lo, end_us=hi)))
    assert same_events(ranged, whole[(whole["t"] >= lo) & (whole["t"] < hi)])
    # Reading stops at the end of the range: a broken tail after it goes unread (the whole-file reader rejects it).
    path.write_bytes(path.read_bytes() + b"\x01\x00garbage")
    with pytest.raises(DatasetError, match="truncated packet header"):
        read_aedat31(path)
    assert same_events(np.concatenate(list(iter_aedat31(path, chunk_events=64, end_us=hi))), whole[whole["t"] < hi])
    with pytest.raises(DatasetError, match=r"rec\.aedat: byte offset \d+: truncated packet header"):
        list(iter_aedat31(path))
    bad = tmp_path / "bad.aedat"
    bad.write_bytes(b"#!AER-DAT2.0\r\n")
    with pytest.raises(DatasetError, match=r"expected an AEDAT 3\.1 header"):
        next(iter_aedat31(bad))


# ------------------------------------------------------------------------------------------- the real shared files


@needs_nmnist
def test_nmnist_test_files_streamed_equal_the_dataset_frames() -> None:
    """All 100 N-MNIST test files: the replay binner (T = 8 equal windows over each sample, the dataset default) and
    the live binner of a duration framing (10 ms windows, length 30, 17x17), fed in random chunks of up to 97
    events, give the dataset's frames exactly."""
    rng = np.random.default_rng(3)
    ds, _ = build_dataset("nmnist", NMNIST, "test")
    by_duration = {"frame_duration_us": 10_000, "length": 30, "size": 17}
    ds_d, _ = build_dataset("nmnist", NMNIST, "test", **by_duration)
    assert len(ds) == 100
    for i in range(len(ds)):
        path = ds.samples[i].path
        events = ds.events(i)
        replay = EventBinner.for_sample("nmnist", {}, int(events["t"][0]), int(events["t"][-1]))
        chunks = iter_nmnist(path, chunk_events=int(rng.integers(50, 400)))
        assert np.array_equal(replay.frames(rechunk(chunks, rng, 97)), ds.frames(i)), path
        live = EventBinner.for_dataset("nmnist", by_duration)
        frames = live.frames(rechunk(iter_nmnist(path, chunk_events=1000), rng, 97))
        assert np.array_equal(padded(frames, 30), ds_d.frames(i)), path


@needs_nmnist
def test_frames_do_not_depend_on_the_chunk_size() -> None:
    ds, _ = build_dataset("nmnist", NMNIST, "test", n_frames=5, size=(10, 15))  # fractional area pooling
    for i in (0, 57, 99):
        events = ds.events(i)
        results = []
        for chunk in (1, 3, 64, 4096):
            binner = EventBinner.for_sample(
                "nmnist", {"n_frames": 5, "size": [10, 15]}, events["t"][0], events["t"][-1]
            )
            results.append(binner.frames(iter_nmnist(ds.samples[i].path, chunk_events=chunk)))
        assert all(np.array_equal(r, ds.frames(i)) for r in results)


@needs_bs2
def test_dvs_gesture_clip_as_a_recording_streams_each_labelled_gesture_to_the_dataset_frames(tmp_path: Path) -> None:
    """A real DVS128 Gesture clip (SLAYER .bs2; no original AEDAT 3.1 recording could be obtained, see the data's
    PROVENANCE) written as an AEDAT 3.1 recording with a labels CSV: the dvs_gesture dataset's samples (T = 16 over
    each gesture, 48x48 by fractional area pooling, as configs/dvs_gesture_vggsnn.toml) equal the gesture's time
    range streamed packet by packet and binned in random chunks; and a 50 ms duration framing live."""
    rng = np.random.default_rng(4)
    clip = read_bs2(BS2 / "1.bs2")
    root = tmp_path / "DvsGesture"
    root.mkdir()
    write_aedat31(root / "user01_natural.aedat", clip, packet_size=777, extra_packets=True)
    (root / "trials_to_train.txt").write_text("\n")
    (root / "trials_to_test.txt").write_text("user01_natural.aedat\n")
    rows = ["class,startTime_usec,endTime_usec", "3,100000,700000", "5,700000,1400000"]
    (root / "user01_natural_labels.csv").write_text("\r\n".join(rows) + "\r\n")
    params = {"size": 48}
    ds, info = build_dataset("dvs_gesture", root, "test", **params)
    by_duration = {"frame_duration_us": 50_000, "length": 12, "size": 32}
    ds_d, _ = build_dataset("dvs_gesture", root, "test", **by_duration)
    assert len(ds) == 2 and info.sample_shape == (16, 2, 48, 48)
    for i, sample in enumerate(ds.samples):
        stream = list(iter_aedat31(sample.path, chunk_events=500, start_us=sample.start_us, end_us=sample.end_us))
        events = np.concatenate(stream)
        assert same_events(events, ds.events(i))
        replay = EventBinner.for_sample("dvs_gesture", params, int(events["t"][0]), int(events["t"][-1]))
        assert np.array_equal(replay.frames(rechunk(iter(stream), rng, 300)), ds.frames(i))
        live = EventBinner.for_dataset("dvs_gesture", by_duration)
        assert np.array_equal(padded(live.frames(rechunk(iter(stream), rng, 300)), 12), ds_d.frames(i))


@needs_bs2
def test_dvs_gesture_bs2_clips_stream_to_their_frames() -> None:
    rng = np.random.default_rng(5)
    for name in ("2.bs2", "7.bs2"):
        events = read_bs2(BS2 / name)
        assert same_events(np.concatenate(list(iter_bs2(BS2 / name, chunk_events=5000))), events)
        spec = EventBinner._dataset_frames("dvs_gesture", {"size": 48})
        binner = EventBinner.for_sample("dvs_gesture", {"size": 48}, int(events["t"][0]), int(events["t"][-1]))
        assert np.array_equal(binner.frames(rechunk(iter_events(BS2 / name), rng, 2000)), spec(events))


@needs_aedat4
def test_aedat4_sample_streamed_equals_its_frames() -> None:
    """The real DVXplorer recording (320x240): the packets streamed equal the whole-file decoder's events, and the
    binner equals ToFrames for 10 equal windows (240x320 -> 90x120, fractional pooling) and for 20 ms windows."""
    rng = np.random.default_rng(6)
    stream = list(iter_aedat4(AEDAT4_SAMPLE))
    events = np.concatenate(stream)
    assert same_events(events, read_aedat4(AEDAT4_SAMPLE, isolate=False))
    t0, t1 = int(events["t"][0]), int(events["t"][-1])
    want = ToFrames(sensor_size=(320, 240), n_frames=10, size=(90, 120))(events)
    binner = EventBinner((320, 240), Fraction(t1 - t0, 10), size=(90, 120), origin_us=t0, n_windows=10, end_us=t1)
    assert np.array_equal(binner.frames(rechunk(iter(stream), rng, 700)), want)
    by_time = ToFrames(sensor_size=(320, 240), frame_duration_us=20_000, size=(60, 80))(events)
    assert np.array_equal(
        EventBinner((320, 240), 20_000, size=(60, 80)).frames(rechunk(iter(stream), rng, 50)), by_time
    )
    mid = (t0 + t1) // 2
    ranged = np.concatenate(list(iter_aedat4(AEDAT4_SAMPLE, start_us=mid, end_us=mid + 100_000)))
    assert same_events(ranged, events[(events["t"] >= mid) & (events["t"] < mid + 100_000)])


@needs_nmnist
def test_bench_stream_binning_quick(tmp_path: Path) -> None:
    from tests.conftest import load_bench

    bench = load_bench("stream_binning")
    out = tmp_path / "stream.json"
    assert bench.main(["--quick", "--root", str(NMNIST / "Test"), "--chunks", "100", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["replay_equals_dataset_frames"] and result["files"] == 10
    assert all(v["median_events_per_s"] > 0 for v in result["variants"].values())
