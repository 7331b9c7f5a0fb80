"""Issue 34, run directories: export never writes over a run's own files, train never replaces results without
--overwrite (and then keeps them), damaged or non-finite checkpoints are refused, a run being trained is not
exported (eval warns), a full disk is one line naming the path. Real processes where files and locks are the point."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsesnn.cli import main
from sparsesnn.core.errors import CheckpointError
from sparsesnn.train.checkpoint import load_checkpoint, save_checkpoint
from sparsesnn.train.config import load_config_text
from sparsesnn.train.rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SELECTED_FILE, SUMMARY_FILE
from sparsesnn.train.trainer import Trainer
from tests.conftest import tiny_toml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "SPARSESNN_NO_COMPILE": "1", "PYTHONPATH": str(REPO)}
TOML = tiny_toml().replace("epochs = 3", "epochs = 2")


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    """``sparsesnn ARGS`` as its own process."""
    command = [sys.executable, "-m", "sparsesnn", *map(str, args)]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(load_config_text(TOML), run, quiet=True).fit()
    return run


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    """A copy of a finished two-epoch run."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------------
# 1. export --out
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("pt", CHECKPOINT_FILE),
        ("pt", CONFIG_FILE),
        ("safetensors", METRICS_FILE),
        ("nir", SUMMARY_FILE),
        ("deploy", CHECKPOINT_FILE),
        ("pt", "notes.txt"),
    ],
)
def test_export_refuses_to_write_over_the_runs_own_files(run: Path, fmt: str, name: str) -> None:
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    done = cli("export", run, "--format", fmt, "--out", run / name)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{run / name}" in done.stderr and "inside the run directory" in done.stderr
    assert snapshot(run) == before


def test_export_refuses_a_directory_as_out(run: Path, tmp_path: Path) -> None:
    done = cli("export", run, "--format", "pt", "--out", tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and f"{tmp_path} is a directory" in done.stderr


def test_export_names_inside_the_run_directory_are_allowed(run: Path) -> None:
    assert main(["export", str(run), "--format", "pt", "--out", str(run / "model_small.pt")]) == 0
    assert (run / "model_small.pt").is_file()
    assert main(["train", "--quiet", "--resume", str(run)]) == 0  # the run still reads


# ----------------------------------------------------------------------------------------------------------------------
# 2. train into a folder that holds results
# ----------------------------------------------------------------------------------------------------------------------
def test_train_refuses_a_folder_with_results_but_no_checkpoint(run: Path, tmp_path: Path) -> None:
    (run / CHECKPOINT_FILE).unlink()
    before = snapshot(run)
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    done = cli("train", "--quiet", "--config", config, "--run-dir", run)
    assert done.returncode == 2, done.stderr
    assert "--overwrite" in done.stderr and SUMMARY_FILE in done.stderr and "Traceback" not in done.stderr
    assert snapshot(run) == before


def test_train_keeps_a_users_own_recipe_and_overwrite_moves_it_aside(tmp_path: Path) -> None:
    exp = tmp_path / "myexp"
    exp.mkdir()
    recipe = "# my notes on this experiment\n" + TOML
    (exp / CONFIG_FILE).write_text(recipe)
    done = cli("train", "--quiet", "--config", exp / CONFIG_FILE, "--run-dir", exp)
    assert done.returncode == 2, done.stderr
    assert f"{exp} holds {CONFIG_FILE}" in done.stderr
    assert (exp / CONFIG_FILE).read_text() == recipe

    done = cli("train", "--quiet", "--config", exp / CONFIG_FILE, "--run-dir", exp, "--overwrite")
    assert done.returncode == 0, done.stderr
    (previous,) = exp.glob("previous-*")
    assert (previous / CONFIG_FILE).read_text() == recipe  # kept, comments and all
    assert f"moved to {previous}" in done.stderr
    assert (exp / SUMMARY_FILE).is_file() and (exp / CHECKPOINT_FILE).is_file()


# ----------------------------------------------------------------------------------------------------------------------
# 3. damaged checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def flip_middle(path: Path, count: int = 2000) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - count // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_is_refused_by_resume_eval_and_export(run: Path) -> None:
    shutil.copy(run / CHECKPOINT_FILE, run / SELECTED_FILE)  # an intact earlier state to point at
    flip_middle(run / CHECKPOINT_FILE)
    for args in (("train", "--quiet", "--resume", run), ("eval", run), ("export", run, "--format", "pt")):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"{run / CHECKPOINT_FILE}" in done.stderr and "checksum" in done.stderr, done.stderr
        assert f"{run / SELECTED_FILE}" in done.stderr  # the way out
    assert not (run / "model.pt").exists()


def test_non_finite_values_in_a_checkpoint_are_refused(run: Path) -> None:
    state = load_checkpoint(run / CHECKPOINT_FILE)
    first = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][first][0, 0] = float("nan")
    save_checkpoint(run / CHECKPOINT_FILE, state)  # a valid checksum over a NaN
    with pytest.raises(CheckpointError, match=rf"non-finite.*model\.{first}"):
        load_checkpoint(run / CHECKPOINT_FILE)
    assert main(["export", str(run), "--format", "pt"]) == 2
    assert not (run / "model.pt").exists()


def test_a_format_1_checkpoint_without_a_checksum_still_resumes_and_exports(run: Path) -> None:
    state = load_checkpoint(run / CHECKPOINT_FILE)
    old = {k: v for k, v in state.items() if k != "checksum"}
    old["format"] = 1
    torch.save(old, run / CHECKPOINT_FILE)  # what the library wrote before checksums
    assert load_checkpoint(run / CHECKPOINT_FILE)["epoch"] == 2
    assert main(["export", str(run), "--format", "pt"]) == 0
    trainer = Trainer.resume(run, quiet=True)
    assert trainer.state.epoch == 2


# ----------------------------------------------------------------------------------------------------------------------
# 5. a run being trained: export refuses unless --force, eval warns
# ----------------------------------------------------------------------------------------------------------------------
def test_export_of_a_run_being_trained_refuses_unless_forced_and_eval_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "long.toml"
    config.write_text(
        TOML.replace("epochs = 2", "epochs = 50").replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 40")
    )
    run = tmp_path / "live"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--config", str(config), "--run-dir", str(run)],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from tests.test_preemption import epochs_written, wait_for

        wait_for(lambda: epochs_written(run) >= 1, "the first epoch", trainer)
        done = cli("export", run, "--format", "pt")
        assert done.returncode == 2, done.stderr
        assert f"process {trainer.pid}" in done.stderr and "--force" in done.stderr
        assert not (run / "model.pt").exists()
        assert main(["export", str(run), "--format", "pt", "--force"]) == 0
        assert (run / "model.pt").is_file()
        capsys.readouterr()
        assert main(["eval", "--quiet", str(run)]) == 0
        err = capsys.readouterr().err
        assert f"process {trainer.pid}" in err and "warning" in err
        assert trainer.poll() is None
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.communicate(timeout=120)


# ----------------------------------------------------------------------------------------------------------------------
# 6. a full disk
# ----------------------------------------------------------------------------------------------------------------------
def _full_disk(real):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def write(path, payload):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, payload)

    return write


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sparsesnn.train.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", _full_disk(checkpoint.atomic_write_bytes))
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--config", str(config), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"cannot write {run / CHECKPOINT_FILE}" in err and "No space left on device" in err and "free" in err
    assert load_checkpoint(run / CHECKPOINT_FILE)["epoch"] == 1  # the previous one, intact


def test_a_full_disk_during_an_export_is_one_line(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sparsesnn.interop.export as export

    def full(path, payload):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "atomic_write_bytes", full)
    assert main(["export", str(run), "--format", "pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"cannot write {run / 'model.pt'}" in err and "free" in err
