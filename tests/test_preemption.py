"""One writer per run directory, and preemption (issue 23, items 2 and 4): real processes and real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparsesnn.cli import main
from sparsesnn.train.config import load_config_text
from sparsesnn.train.rundir import CHECKPOINT_FILE, LOCK_FILE, METRICS_FILE, RunDirBusyError, RunDirLock
from sparsesnn.train.trainer import Trainer
from tests.conftest import run_metrics, tiny_toml

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")

#: long enough epochs (40 steps) to catch a process in the middle of one
TOML = tiny_toml().replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 40")
ENV = {**os.environ, "SPARSESNN_NO_COMPILE": "1"}


def train_cmd(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--config", str(config), "--run-dir", str(run_dir)]


def wait_for(condition, what: str, proc=None, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it holds; fail when ``proc`` ends first or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}: {proc.stderr.read()!r}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_written(run_dir: Path) -> int:
    path = run_dir / METRICS_FILE
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same run trained without a break, by the same command."""
    tmp = tmp_path_factory.mktemp("full")
    config = tmp / "tiny.toml"
    config.write_text(TOML)
    subprocess.run(train_cmd(config, tmp / "full"), check=True, env=ENV, capture_output=True)
    return tmp / "full"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_stop_signal_mid_epoch_checkpoints_and_resume_continues_exactly(
    tmp_path: Path, uninterrupted: Path, signum: int, code: int
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    run = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(config, run), env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: epochs_written(run) >= 1, "the first epoch", proc)
    proc.send_signal(signum)  # in epoch 2 (or 3): the step in progress finishes, then the checkpoint
    _out, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == code, err
    assert f"stopped by {name} at epoch" in err and f"--resume {run}" in err
    trainer = Trainer.resume(run, quiet=True)
    assert 0 < trainer.state.batch < 40 and trainer.state.epoch in (1, 2)  # mid-epoch: a batch count was saved
    resumed = subprocess.run(
        [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--resume", str(run)],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    e, b = trainer.state.epoch, trainer.state.batch
    assert f"resuming {run}: epoch {e + 1} of 3, after batch {b} of 40" in resumed.stderr
    assert run_metrics(run) == run_metrics(uninterrupted)
    assert (run / LOCK_FILE).read_text() == ""  # released


def test_a_second_writer_is_refused_and_named_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TOML.replace("epochs = 3", "epochs = 30"))
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(config, run), env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: epochs_written(run) >= 1, "the first epoch", first)
        assert main(["train", "--quiet", "--config", str(config), "--run-dir", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"{run} is being written by process {first.pid} on {socket.gethostname()}" in err
        assert main(["train", "--quiet", "--resume", str(run)]) == 2  # --resume too
        assert f"being written by process {first.pid}" in capsys.readouterr().err
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    lines = epochs_written(run)
    assert [json.loads(line)["epoch"] for line in (run / METRICS_FILE).read_text().splitlines()] == list(
        range(1, lines + 1)
    )  # one run's epochs, in order


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TOML.replace("epochs = 3", "epochs = 30"))
    run = tmp_path / "run"
    victim = subprocess.Popen(train_cmd(config, run), env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: epochs_written(run) >= 1, "the first epoch", victim)
    victim.send_signal(signal.SIGKILL)  # no handler runs: the record stays in run.lock
    victim.communicate(timeout=60)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == victim.pid
    trainer = Trainer.resume(run, quiet=True)
    with pytest.warns(UserWarning, match=rf"left by process {victim.pid} on .*sparsesnn train.*no longer running"):
        lock = RunDirLock(run).acquire()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(RunDirBusyError, match=rf"being written by process {os.getpid()}"):
        trainer.fit()  # this process holds it through another handle: refused too
    lock.release()
    assert (run / LOCK_FILE).read_text() == ""


def test_fit_holds_the_lock_only_while_it_trains(tmp_path: Path) -> None:
    run = tmp_path / "run"
    toml = tiny_toml()
    Trainer(load_config_text(toml), run, quiet=True).fit()
    assert (run / LOCK_FILE).read_text() == "" and (run / CHECKPOINT_FILE).is_file()
    with RunDirLock(run):  # free again: taken without a warning
        pass
