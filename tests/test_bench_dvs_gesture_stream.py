"""bench/dvs_gesture_stream.py's DvsGesture folder from the SLAYER .bs2 clips: the dvs_gesture dataset reads it, one
sample per clip spanning the whole clip, with the bench's synthetic label (the bench's training and streaming take
about a minute: not run here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sparsesnn.data import build_dataset
from sparsesnn.data.events import read_bs2
from tests.conftest import DATA, load_bench

BS2 = DATA / "dvs_gesture" / "slayer_bs2_1450ms"


@pytest.mark.skipif(not BS2.is_dir(), reason=f"SLAYER .bs2 clips not found at {BS2}")
def test_bench_dvs_gesture_folder_is_read_by_the_dataset(tmp_path: Path) -> None:
    bench = load_bench("dvs_gesture_stream")
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("2.bs2", "10.bs2"):
        shutil.copy(BS2 / name, clips / name)
    folder = bench.build_folder(bench.clip_files(clips), tmp_path / "DvsGesture")
    assert folder["train"] == ["user02_natural", "user10_natural"] and folder["test"] == []
    assert folder["labels_1_based"] == {"2.bs2": 3, "10.bs2": 11}
    ds, info = build_dataset("dvs_gesture", Path(folder["root"]), "train", size=48)
    assert len(ds) == 2 and info.sample_shape == (16, 2, 48, 48)
    for i, name in enumerate(("2.bs2", "10.bs2")):
        events = read_bs2(BS2 / name)
        assert ds.samples[i].label == bench.synthetic_label(int(name.removesuffix(".bs2"))) - 1
        assert len(ds.events(i)) == len(events) and np.array_equal(ds.events(i)["t"].astype(np.int64), events["t"])
