"""Reading a finished run without a trainer: the same model, masks, evaluation and export inputs as the trainer's own
state, on the device asked for; export, eval and deploy's evaluation reach no trainer."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from sparsesnn.core.errors import CheckpointError
from sparsesnn.train.config import load_config_text
from sparsesnn.train.run_reader import CHECKPOINTS, read_run
from sparsesnn.train.rundir import CONFIG_FILE
from sparsesnn.train.trainer import Trainer
from tests.conftest import tiny_toml
from tests.test_import_rules import import_graph


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    toml = tiny_toml("rigl", 0.3).replace(
        "time_steps = 2", 'time_steps = 2\nvalidation_samples = 64\nencoder = "poisson"'
    )
    rd = tmp_path_factory.mktemp("reader") / "run"
    Trainer(load_config_text(toml), rd, quiet=True).fit()
    return rd


def _reached(start: str) -> set[str]:
    graph = import_graph()
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


@pytest.mark.parametrize(
    "module",
    ["sparsesnn.train.run_reader", "sparsesnn.interop.export", "sparsesnn.deploy.api", "sparsesnn.train.components"],
)
def test_reading_a_run_imports_no_trainer(module: str) -> None:
    assert "sparsesnn.train.trainer" not in _reached(module)


@pytest.mark.parametrize("checkpoint", sorted(CHECKPOINTS))
def test_the_reader_restores_what_the_trainer_restores(run: Path, checkpoint: str) -> None:
    trainer = Trainer.resume(run, quiet=True, checkpoint=checkpoint)
    finished = read_run(run, checkpoint=checkpoint)
    assert finished.restored_from == trainer.restored_from and finished.epoch == trainer.state.epoch
    ours, theirs = finished.model.state_dict(), trainer.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert finished.learner.density() == trainer.learner.density()
    assert finished.learner.summary() == trainer.learner.summary()
    assert finished.evaluate() == trainer.evaluate()
    assert finished.data.validation is not None
    val = finished.evaluate(finished.data.validation, split="val", monitors=False)
    assert val == trainer.evaluate(trainer.data.validation, split="val", monitors=False)


def test_the_example_is_seeded_and_the_test_batches_cover_the_split(run: Path) -> None:
    finished = read_run(run)
    example = finished.example(8)
    assert example.device.type == "cpu" and example.shape[:2] == (2, 8) and example.is_contiguous()
    assert torch.equal(finished.example(8), example)  # seeded: the same input every time
    assert finished.example(1000).shape[1] == 128  # capped at the test split (data.max_test_samples)
    batches = list(finished.test_batches(50))
    assert [int(y.numel()) for _, y in batches] == [50, 50, 28]
    assert all(x.shape[0] == 2 for x, _ in batches)


def test_a_missing_selected_checkpoint_and_a_foreign_directory_are_named(tmp_path: Path) -> None:
    rd = tmp_path / "plain"
    Trainer(load_config_text(tiny_toml("static", 0.5, "{}").replace("epochs = 3", "epochs = 1")), rd, quiet=True).fit()
    with pytest.raises(CheckpointError, match=r"selected\.pt"):
        read_run(rd, checkpoint="selected")
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        read_run(rd, checkpoint="best")
    with pytest.raises(CheckpointError, match=re.escape(CONFIG_FILE)):
        read_run(tmp_path)


def test_a_run_on_a_missing_device_is_read_on_the_cpu_with_a_warning(run: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: no fallback")
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (moved / f.name).write_bytes(f.read_bytes())
    text = (moved / CONFIG_FILE).read_text().replace('device = "auto"', 'device = "cuda"')
    assert 'device = "cuda"' in text
    (moved / CONFIG_FILE).write_text(text)
    # run.device is relocatable: the checkpoint's "auto" does not conflict with the config's "cuda"
    with pytest.warns(UserWarning, match="using the CPU"):
        finished = read_run(moved)
    assert finished.device.type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a device given explicitly: no warning
        assert read_run(moved, device="cpu").evaluate() == finished.evaluate()
