"""Issue 34, bad data: a non-finite input or a label outside [0, classes) stops a run at its first batch, naming the
dataset and the sample; weights that turn non-finite after an optimiser step stop it as a non-finite loss does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pydantic import Field

from sparsesnn.cli import main
from sparsesnn.core.errors import TrainingDivergedError
from sparsesnn.data import DATASETS, ArrayDataset, DatasetInfo
from sparsesnn.data.base import register_dataset
from sparsesnn.data.images import DigitsSettings
from sparsesnn.train.batching import epoch_order
from sparsesnn.train.checkpoint import load_checkpoint
from sparsesnn.train.config import load_config_text
from sparsesnn.train.rundir import CHECKPOINT_FILE
from sparsesnn.train.trainer import Trainer
from tests.conftest import tiny_toml

SEED = 3  # tiny_toml's run.seed
TOML = tiny_toml().replace("epochs = 3", "epochs = 2")


class FaultySettings(DigitsSettings):
    """The packaged digits with one fault planted in one training sample (the tests of bad data)."""

    fault: str = Field("none", description="none, nan, inf, or label<N> (that sample's label becomes N)")
    sample: int = Field(0, ge=0, description="the index of the training sample that carries the fault")


def _faulty(root, split, s: FaultySettings):  # type: ignore[no-untyped-def]
    base = DigitsSettings(**{k: v for k, v in s.model_dump().items() if k in DigitsSettings.model_fields})
    data, info = DATASETS["digits"].load(root, split, base)
    x, y = data.inputs.clone(), data.targets.clone()
    if split == "train":
        if s.fault == "nan":
            x[s.sample, 0, 3, 4] = float("nan")
        elif s.fault == "inf":
            x[s.sample, 0, 0, 0] = float("inf")
        elif s.fault.startswith("label"):
            y[s.sample] = int(s.fault[len("label") :])
    info = DatasetInfo(**{**info.__dict__, "name": "digits-faulty"})
    return ArrayDataset(x, y), info


if "digits-faulty" not in DATASETS:
    register_dataset("digits-faulty", FaultySettings)(_faulty)


def _config(tmp_path: Path, fault: str, sample: int) -> Path:
    path = tmp_path / "faulty.toml"
    text = TOML.replace('name = "digits"', 'name = "digits-faulty"')
    text = text.replace("time_steps = 2", f'time_steps = 2\nparams = {{ fault = "{fault}", sample = {sample} }}')
    path.write_text(text)
    return path


def _first_batch_sample(tmp_path: Path) -> int:
    """A sample of the first training batch (the 6th of epoch 1's order)."""
    train, _ = DATASETS["digits"](None, "train")
    return int(epoch_order(len(train), SEED, 0, shuffle=True)[5])


@pytest.mark.parametrize("fault", ["nan", "inf", "label10", "label-100", "label-1"])
def test_bad_data_stops_the_run_at_the_first_batch_naming_dataset_and_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    sample = _first_batch_sample(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--config", str(_config(tmp_path, fault, sample)), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "digits-faulty" in err and f"sample {sample}" in err, err
    assert ("non-finite" in err) if fault in ("nan", "inf") else ("label" in err and "[0, 10)" in err), err
    assert "epoch 1, batch 1" in err
    assert not (run / CHECKPOINT_FILE).exists()  # stopped before any step was kept


def test_non_finite_weights_after_a_step_stop_the_run_keeping_the_last_good_checkpoint(tmp_path: Path) -> None:
    trainer = Trainer(load_config_text(TOML), tmp_path / "run", quiet=True)
    apply = trainer.step.apply
    calls = {"n": 0}

    def poisoned() -> bool:
        done = apply()
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, batch 2
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = math.inf
        return done

    trainer.step.apply = poisoned  # type: ignore[method-assign]
    with pytest.raises(TrainingDivergedError, match=r"weights became non-finite .*epoch 2, batch 2"):
        trainer.fit()
    kept = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)  # the last good one, finite
    assert kept["epoch"] == 1 and kept["batch"] == 0
