"""The held-out validation split (``data.validation_samples``) and the checkpoint it selects (``selected.pt``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsesnn.cli import main
from sparsesnn.core.errors import CheckpointError, ConfigError
from sparsesnn.experiments.report import SELECTED_COLUMN, build_report
from sparsesnn.train.config import load_config_text
from sparsesnn.train.factory import VALIDATION_SPLIT_SEED, build_data, validation_indices
from sparsesnn.train.trainer import CHECKPOINT_FILE, SELECTED_FILE, Trainer, selected_record, selection_candidates
from tests.conftest import fit_killed_after_epoch, run_metrics, tiny_toml


def _with_validation(toml: str, n: int) -> str:
    return toml.replace("max_test_samples = 128", f"max_test_samples = 128\nvalidation_samples = {n}")


def test_validation_indices_are_a_fixed_disjoint_cover():
    held, kept = validation_indices(50, 12)
    assert len(held) == 12 and len(kept) == 38
    assert sorted(torch.cat([held, kept]).tolist()) == list(range(50))
    again, _ = validation_indices(50, 12)
    assert torch.equal(held, again)  # the same split on every call, whatever the run's seed
    assert held.tolist() != list(range(12))  # a random subset, not the first samples


def test_validation_seed_draws_another_split_and_leaves_old_configs_unchanged():
    toml = _with_validation(tiny_toml(), 40)

    def seeded(seed: int) -> str:
        return toml.replace("validation_samples = 40", f"validation_samples = 40\nvalidation_seed = {seed}")

    default = build_data(load_config_text(toml))
    assert torch.equal(
        default.validation.inputs, build_data(load_config_text(seeded(VALIDATION_SPLIT_SEED))).validation.inputs
    )
    other = build_data(load_config_text(seeded(7)))
    assert not torch.equal(default.validation.inputs, other.validation.inputs)
    plain = build_data(load_config_text(tiny_toml())).train  # no split, not augmented
    held, kept = validation_indices(len(plain), 40, 7)
    assert torch.equal(other.validation.inputs, plain.inputs[held])
    assert torch.equal(other.train.inputs, plain.inputs[kept])
    # a config without the key resolves as before (old run directories resume against their checkpoints)
    assert "validation_seed" not in load_config_text(toml).to_dict()["data"]
    with pytest.raises(ConfigError, match="validation_seed is set but validation_samples = 0"):
        load_config_text(tiny_toml().replace("max_test_samples = 128", "max_test_samples = 128\nvalidation_seed = 3"))


def _held_out_and_plain(root: Path, name: str, params: str, n_train: int, n_test: int, n_val: int):
    """A real dataset read twice: augmented with ``n_val`` of its first ``n_train`` training samples held out, and
    plain (no split, no augmentation); with the split's indices. Both bundles' sizes are checked."""
    toml = f"""
[data]
name = "{name}"
root = "{root / name}"
augment = true
{params}
max_train_samples = {n_train}
max_test_samples = {n_test}
validation_samples = {n_val}
"""
    data = build_data(load_config_text(toml))
    plain = build_data(load_config_text(toml.replace(f"validation_samples = {n_val}", "").replace("true", "false")))
    assert len(data.train) == n_train - n_val and len(data.validation) == n_val
    return data, plain, *validation_indices(n_train, n_val)


def test_mnist_validation_is_held_out_of_training_and_not_augmented(shared_data):
    data, plain, held, kept = _held_out_and_plain(shared_data, "mnist", "", 600, 10, 100)
    # the held-out samples are exactly the plain (unaugmented) training samples at the held-out indices
    assert data.validation.transform is None
    assert torch.equal(data.validation.inputs, plain.train.inputs[held])
    assert torch.equal(data.validation.targets, plain.train.targets[held])
    # the rest is what is trained on, still augmented; the test split is untouched
    assert data.train.transform is not None
    assert torch.equal(data.train.inputs, plain.train.inputs[kept])
    assert torch.equal(data.test.inputs, plain.test.inputs)


def test_event_dataset_validation_is_a_subset_of_unaugmented_frames(shared_data):
    params = 'params = { n_frames = 4, split_by = "time" }'
    data, plain, held, kept = _held_out_and_plain(shared_data, "nmnist", params, 60, 5, 20)
    for i in (0, 7, 19):  # frames read lazily from the event files, through a Subset of the plain view
        x, y = data.validation[i]
        px, py = plain.train[int(held[i])]
        assert torch.equal(x, px) and y == py
    assert data.train.indices == kept.tolist()


def test_holding_out_the_whole_training_split_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.validation_samples = 5000.*only \d+ samples"):
        build_data(load_config_text(_with_validation(tiny_toml(), 5000)))
    with pytest.raises(ConfigError, match="validation_samples"):
        load_config_text(_with_validation(tiny_toml(), -1))


def test_selected_checkpoint_is_the_epoch_of_best_validation_accuracy(tmp_path):
    trainer = Trainer(load_config_text(_with_validation(tiny_toml(), 200)), tmp_path / "run", quiet=True)
    summary = trainer.fit()
    history = trainer.state.history
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["val_loss"] > 0 for r in history)
    val = [r["val_acc"] for r in history]
    expected = max(i for i, v in enumerate(val) if v == max(val)) + 1  # latest epoch of the best val accuracy
    assert summary["selected_epoch"] == expected
    assert summary["selected_val_acc"] == max(val)
    assert summary["selected_test_acc"] == history[expected - 1]["test_acc"]
    # selected.pt holds that epoch's state: evaluating it reproduces that epoch's numbers
    chosen = Trainer.resume(tmp_path / "run", quiet=True, checkpoint="selected")
    assert chosen.state.epoch == expected
    assert chosen.evaluate()["test_acc"] == history[expected - 1]["test_acc"]
    assert chosen.evaluate(chosen.data.validation, split="val")["val_acc"] == max(val)
    with pytest.raises(CheckpointError, match=r"restored from selected\.pt"):
        chosen.fit()  # it would overwrite the run's last checkpoint with an earlier state
    # the report carries the selected accuracy of each run
    report = build_report([tmp_path / "run"], tmp_path / "report").parent
    results = json.loads((report / "results.json").read_text())
    assert [r["selected_test_acc"] for r in results["runs"]] == [summary["selected_test_acc"]]
    assert results["groups"][0]["selected_test_acc_mean"] == summary["selected_test_acc"]
    header, _, row = (report / "table.md").read_text().splitlines()
    cells = dict(zip(header.strip("|").split(" | "), row.strip("|").split(" | "), strict=True))
    assert cells[SELECTED_COLUMN.strip()] == f"{summary['selected_test_acc'] * 100:.2f}"
    assert results["columns"].index(SELECTED_COLUMN) == results["columns"].index("Acc. %") + 1


def test_validation_pass_counts_no_monitors_and_names_its_split(tmp_path):
    trainer = Trainer(load_config_text(_with_validation(tiny_toml(), 200)), tmp_path / "run", quiet=True)
    plain = trainer.evaluate(trainer.data.validation, split="val", monitors=False)
    full = trainer.evaluate(trainer.data.validation, split="val")
    assert set(plain) == {"val_loss", "val_acc"}
    assert (plain["val_loss"], plain["val_acc"]) == (full["val_loss"], full["val_acc"])  # hooks change no number
    assert full["sops"] > 0 and "test_acc" not in full
    record = trainer._epoch_record()
    assert record["val_acc"] == plain["val_acc"] and record["sops"] == trainer.evaluate()["sops"]  # test split's


def _selected(run_dir: Path) -> dict:
    return torch.load(run_dir / SELECTED_FILE, weights_only=True)


def _assert_same_selected(run_a: Path, run_b: Path) -> None:
    """Both runs' ``selected.pt`` hold the same epoch and the same model tensors."""
    a, b = _selected(run_a), _selected(run_b)
    assert a["epoch"] == b["epoch"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_selection_survives_a_kill_between_epochs(tmp_path, monkeypatch):
    toml = _with_validation(tiny_toml(), 200)
    Trainer(load_config_text(toml), tmp_path / "full", quiet=True).fit()
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 2, monkeypatch)
    Trainer.resume(tmp_path / "cut", quiet=True).fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")
    _assert_same_selected(tmp_path / "full", tmp_path / "cut")


def test_selected_record_prefers_the_later_epoch_on_a_tie_and_needs_validation():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}, {"epoch": 3, "val_acc": 0.7}]
    assert selected_record(history)["epoch"] == 3
    assert selected_record([{"epoch": 1, "test_acc": 0.9}]) is None


def test_selection_among_the_final_density_skips_denser_epochs():
    def history(densities: list[float], vals: list[float]) -> list[dict]:
        pairs = enumerate(zip(densities, vals, strict=True))
        return [{"epoch": i + 1, "density": d, "val_acc": v} for i, (d, v) in pairs]

    pruning = history([1.0, 0.8, 0.6, 0.6, 0.6], [0.99, 0.98, 0.95, 0.97, 0.96])
    assert [r["epoch"] for r in selection_candidates(pruning)] == [3, 4, 5]
    assert selected_record(pruning)["epoch"] == 4  # not epoch 1, the best but densest
    assert selected_record(pruning, "all_epochs")["epoch"] == 1
    # only the trailing stretch counts: an earlier epoch at the final density, before a regrowth, is not a candidate
    regrown = history([0.6, 0.7, 0.6], [0.99, 0.98, 0.9])
    assert selected_record(regrown)["epoch"] == 3
    # a fixed density (dense, SET, RigL, ESL) leaves every epoch a candidate; records of old runs without a density
    fixed = history([0.3, 0.3, 0.3], [0.9, 0.95, 0.94])
    assert selected_record(fixed)["epoch"] == 2
    assert selected_record([{k: v for k, v in r.items() if k != "density"} for r in pruning])["epoch"] == 1
    assert selection_candidates([{"epoch": 1, "density": 0.5}]) == []  # no validation split


def _gmp_with_validation(among: str | None = None) -> str:
    """GMP over 4 tiny epochs, pruning in the first half: two epochs of changing density, two at the final one."""
    toml = _with_validation(tiny_toml("gmp", 0.3, "{ update_every = 2, end_at = 0.5 }"), 200)
    toml = toml.replace("epochs = 3", "epochs = 4")
    return (
        toml.replace("validation_samples = 200", f'validation_samples = 200\nselect_among = "{among}"')
        if among
        else toml
    )


def test_a_pruning_run_selects_and_saves_an_epoch_at_its_final_density(tmp_path, monkeypatch):
    full = Trainer(load_config_text(_gmp_with_validation()), tmp_path / "full", quiet=True)
    summary = full.fit()
    history = full.state.history
    densities = [r["density"] for r in history]
    assert densities[0] > densities[1] == densities[2] == densities[3]  # pruning ends with epoch 2
    val = {r["epoch"]: r["val_acc"] for r in history[1:]}
    assert summary["selected_epoch"] == max(e for e in val if val[e] == max(val.values()))
    assert _selected(tmp_path / "full")["epoch"] == summary["selected_epoch"]
    chosen = Trainer.resume(tmp_path / "full", quiet=True, checkpoint="selected")
    assert chosen.learner.density() == densities[-1]
    # a kill after epoch 1 (selected.pt then holds the densest epoch) and a resume end with the same selection
    cut = Trainer(load_config_text(_gmp_with_validation()), tmp_path / "cut", quiet=True)
    fit_killed_after_epoch(cut, 1, monkeypatch)
    assert _selected(tmp_path / "cut")["epoch"] == 1
    assert Trainer.resume(tmp_path / "cut", quiet=True).fit()["selected_epoch"] == summary["selected_epoch"]
    _assert_same_selected(tmp_path / "full", tmp_path / "cut")
    # all_epochs is the old rule: the best validation epoch whatever its density (the same training otherwise)
    every = Trainer(load_config_text(_gmp_with_validation("all_epochs")), tmp_path / "every", quiet=True).fit()
    val_all = [r["val_acc"] for r in history]
    assert every["selected_epoch"] == max(i for i, v in enumerate(val_all) if v == max(val_all)) + 1
    with pytest.raises(ConfigError, match="select_among"):
        load_config_text(_gmp_with_validation("best"))


def test_cli_eval_and_export_of_the_selected_checkpoint(tmp_path, capsys):
    plain = tmp_path / "plain"
    Trainer(load_config_text(tiny_toml()), plain, quiet=True).fit()
    assert not (plain / SELECTED_FILE).exists()
    assert main(["eval", str(plain), "--checkpoint", "selected"]) != 0
    assert "has no selected.pt" in capsys.readouterr().err  # a clear error, no traceback
    rd = tmp_path / "run"
    summary = Trainer(load_config_text(_with_validation(tiny_toml(), 200)), rd, quiet=True).fit()
    capsys.readouterr()
    assert main(["eval", str(rd), "--checkpoint", "selected", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epoch"] == summary["selected_epoch"]
    assert result["test_acc"] == summary["selected_test_acc"]
    assert main(["export", str(rd), "--format", "pt", "--checkpoint", "selected"]) == 0
    assert (rd / "model_selected.pt").is_file() and not (rd / "model.pt").exists()
    assert (rd / CHECKPOINT_FILE).is_file()
