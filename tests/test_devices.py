"""Checkpoints move between devices: a run directory written on CUDA continues, evaluates and exports on the CPU.

No GPU is needed: the run directory is made to look exactly as a CUDA run leaves it (``run.device = "cuda"`` in its
config and in the checkpoint, and every tensor storage of ``checkpoint.pt`` tagged ``cuda:0``, which a plain
``torch.load`` refuses on a machine without CUDA). The real moves, CUDA to CPU and back, are the ``cuda`` tests of
tests/test_cuda.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torch.serialization

from sparsesnn.cli import main
from sparsesnn.core.errors import ConfigError
from sparsesnn.core.files import atomic_write_bytes
from sparsesnn.core.state import generator_state
from sparsesnn.sparse import METHODS
from sparsesnn.train.checkpoint import load_checkpoint, state_checksum
from sparsesnn.train.config import load_config, load_config_text
from sparsesnn.train.trainer import CHECKPOINT_FILE, CONFIG_FILE, Trainer
from tests.conftest import fit_killed_after_epoch, run_metrics, tiny_toml


def _tag_cuda(_storage: object) -> str:
    return "cuda:0"


def _as_if_written_on_cuda(run_dir: Path) -> None:
    """Rewrite ``run_dir`` as a CUDA run leaves it: ``run.device = "cuda"`` and every storage tagged ``cuda:0``."""
    text = (run_dir / CONFIG_FILE).read_text().replace('device = "auto"', 'device = "cuda"')
    assert 'device = "cuda"' in text
    (run_dir / CONFIG_FILE).write_text(text)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    state["config"]["run"]["device"] = "cuda"
    state["checksum"] = state_checksum(state)
    buf = io.BytesIO()
    torch.serialization.register_package(1, _tag_cuda, lambda obj, location: None)
    try:
        torch.save(state, buf)
    finally:
        registry = torch.serialization._package_registry
        registry[:] = [entry for entry in registry if entry[1] is not _tag_cuda]
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, buf.getvalue())
    with pytest.raises(RuntimeError, match="CUDA"):  # what reading it without mapping to the CPU would do here
        torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)


@pytest.mark.parametrize("method", ["rigl", "sdsnn"])
def test_a_cuda_run_directory_continues_evaluates_and_exports_on_the_cpu(tmp_path, monkeypatch, capsys, method):
    params = "{ N = 1, last_rho_init = 0.1 }" if method == "sdsnn" else "{ update_every = 2 }"
    toml = tiny_toml(method, 0.3 if method == "rigl" else 1.0, params)
    Trainer(load_config_text(toml), tmp_path / "full", quiet=True).fit()
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 1, monkeypatch)
    run = tmp_path / "cut"
    _as_if_written_on_cuda(run)
    if torch.cuda.is_available():
        assert main(["eval", str(run), "--device", "cpu", "--quiet"]) == 0
    else:
        with pytest.raises(ConfigError, match="--device cpu"):  # training does not silently change device
            Trainer.resume(run, quiet=True)
        with pytest.warns(UserWarning, match="using the CPU"):  # evaluation falls back to the CPU, and says so
            assert main(["eval", str(run), "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["epoch"] == 1 and evaluated["test_acc"] == run_metrics(tmp_path / "full")[0]["test_acc"]
    assert main(["export", str(run), "--format", "pt", "--device", "cpu"]) == 0
    assert (run / "model.pt").is_file()
    # training continues on the CPU exactly where it stopped, and the run now records the CPU
    assert main(["train", "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
    assert run_metrics(run) == run_metrics(tmp_path / "full")
    assert load_config(run / CONFIG_FILE).run.device == "cpu"


def test_device_is_only_for_resume():
    with pytest.raises(SystemExit, match="--resume"):
        main(["train", "--config", "configs/digits_quickstart.toml", "--device", "cpu"])


def test_learner_generator_restored_from_any_tensor():
    """A generator state read back in another dtype or device (as a CUDA ``map_location`` gives it) is restored on
    the learner's own CPU generator: the next draws are the same."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    learner = METHODS["static"](model, density=0.5, seed=4)
    state = learner.state_dict()
    expected = torch.randperm(50, generator=learner.generator)
    moved = {**state, "generator": state["generator"].to(torch.int16)}  # no longer a CPU byte tensor
    other = METHODS["static"](torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)), density=0.5, seed=9)
    other.load_state_dict(moved)
    assert torch.equal(torch.randperm(50, generator=other.generator), expected)
    assert generator_state(state["generator"].double()).dtype == torch.uint8
