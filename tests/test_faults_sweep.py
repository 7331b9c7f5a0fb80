"""Issue 34, sweeps: SIGTERM and SIGUSR1 stop a sweep as Ctrl-C does (children checkpoint, 'interrupted', a rerun
resumes), and --dry-run refuses the runs that train would refuse at start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sparsesnn.cli import main
from sparsesnn.experiments.sweep import MANIFEST_FILE
from sparsesnn.train.rundir import CHECKPOINT_FILE, LOCK_FILE
from tests.conftest import tiny_toml
from tests.test_preemption import wait_for

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "SPARSESNN_NO_COMPILE": "1", "PYTHONPATH": str(REPO)}


def _lock_held(run_dir: Path) -> bool:
    path = run_dir / LOCK_FILE
    return path.is_file() and path.read_text().strip() != ""


def _counts(out: Path) -> dict[str, int]:
    try:
        return json.loads((out / MANIFEST_FILE).read_text())["counts"]
    except (OSError, ValueError):
        return {}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_stop_signal_stops_a_sweep_like_ctrl_c(tmp_path: Path, signum: int, code: int) -> None:
    config = tmp_path / "long.toml"
    config.write_text(
        tiny_toml().replace("epochs = 3", "epochs = 50").replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 40")
    )
    out = tmp_path / "sweep"
    argv = ["sweep", "--config", str(config), "--grid", "sparse.density=0.3,0.5", "--jobs", "2", "--out", str(out)]
    sweep = subprocess.Popen([sys.executable, "-m", "sparsesnn", *argv], env=ENV, stderr=subprocess.PIPE, text=True)
    runs = [out / "density-0.3__seed-0", out / "density-0.5__seed-0"]
    wait_for(lambda: all((r / CHECKPOINT_FILE).is_file() and _lock_held(r) for r in runs), "both runs", sweep)
    sweep.send_signal(signum)
    _out, err = sweep.communicate(timeout=180)
    assert sweep.returncode == code, err
    assert _counts(out) == {"interrupted": 2}
    for r in runs:
        assert not _lock_held(r), f"{r}: its training still runs"  # released: the child ended
        stopped = (r / "stderr.log").read_text()
        assert f"stopped by {signal.Signals(signum).name}" in stopped, stopped
    # a rerun resumes them (and is stopped again at once: resuming is what is checked)
    sweep = subprocess.Popen([sys.executable, "-m", "sparsesnn", *argv], env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _counts(out).get("running") == 2, "the rerun", sweep)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert [r["action"] for r in manifest["runs"]] == ["resumed", "resumed"]
    sweep.send_signal(signal.SIGINT)
    sweep.communicate(timeout=180)
    assert sweep.returncode == 130


def test_dry_run_marks_the_runs_train_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    # update_every = 2: SET rewires every 2nd epoch and stops at the end of epoch 2 of 2, so it would never rewire
    config.write_text(tiny_toml().replace("epochs = 3", "epochs = 2"))
    argv = ["sweep", "--config", str(config), "--grid", "sparse.method=rigl,set", "--out", str(tmp_path / "o")]
    assert main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    lines = {line.split(":")[0].strip(): line for line in err.splitlines() if "__seed-0" in line}
    assert "fresh" in lines["method-rigl__seed-0"]
    assert "invalid" in lines["method-set__seed-0"] and "rewiring would never run" in lines["method-set__seed-0"]
    assert not (tmp_path / "o").exists()


def test_a_run_started_before_but_without_a_checkpoint_is_started_again_over_its_files(tmp_path: Path) -> None:
    from sparsesnn.experiments.sweep import _command, plan_sweep

    config = tmp_path / "tiny.toml"
    config.write_text(tiny_toml())
    (run,) = plan_sweep(config, [], out_dir=tmp_path / "o", threads=1)
    assert "--overwrite" not in _command(run, config, resume=False)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.toml").write_text(run.config.to_toml())  # died before its first checkpoint
    assert "--overwrite" in _command(run, config, resume=False)  # train would refuse the folder otherwise
