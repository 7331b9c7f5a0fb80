"""No untrained final structure (issue 26): by default no learner changes the topology after the last optimiser step
of a run, so the final checkpoint holds the masks the last step trained with; SD-SNN's ``final_change`` (the paper's
code) asks for the opposite and the engine warns. Also: a run is named after its directory, ``train`` prints the whole
network's live parameter count, and the report never gives two different runs one label."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsesnn.cli import main
from sparsesnn.sparse import METHODS
from sparsesnn.sparse.methods.gmp import GMP
from sparsesnn.sparse.methods.sdsnn import SDSNN
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import CHECKPOINT_FILE, METRICS_FILE, Trainer
from tests.conftest import tiny_toml

EPOCHS = 5
#: per method, settings that push its structural changes as late as its rules allow (a method not listed runs at
#: its defaults): rewiring at every step or epoch until ``stop_at = 1``, GMP's ramp to the very end, one LTH round
#: per epoch, a PQ round after every epoch, SD-SNN pruning from the end of epoch 4 (``N = 1``) on
LATE: dict[str, tuple[float, str]] = {
    "set": (0.3, "{ stop_at = 1.0 }"),
    "rigl": (0.3, "{ update_every = 1, stop_at = 1.0 }"),
    "esl": (0.3, "{ update_every = 1, stop_at = 1.0 }"),
    "evokd": (0.3, "{ update_every = 1, stop_at = 1.0 }"),
    "gmp": (0.3, "{ update_every = 1, end_at = 1.0 }"),
    "lth": (0.3, f"{{ rounds = {EPOCHS} }}"),
    "pqi": (0.5, "{ stop_at = 1.0 }"),
    "sdsnn": (1.0, "{ N = 1, last_rho_init = 0.1 }"),
}


def _toml(method: str, params: str | None = None, density: float | None = None) -> str:
    d, p = LATE.get(method, (0.3, "{}"))
    toml = tiny_toml(method, d if density is None else density, p if params is None else params)
    toml = toml.replace("epochs = 3", f"epochs = {EPOCHS}").replace("steps_per_epoch = 6", "steps_per_epoch = 4")
    if method in ("esl", "evokd", "pqi"):  # their default dense first and last layers leave a 2-layer MLP no mask
        toml = toml.replace(f'method = "{method}"', f'method = "{method}"\ndense_first = false')
    if method == "evokd":
        toml += '\n[distill]\nsource = "online"\nteacher_model = "mlp"\nteacher_params = { hidden = [16] }\n'
    return toml


def _masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith(("weight_mask", "neuron_mask"))}


def _train_recording(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fit, recording the masks at the first and at the last optimiser step (a step pre-hook: the masks that step's
    forward and backward used, i.e. the masks it trained)."""
    seen: list[dict[str, torch.Tensor]] = []

    def record(_opt: Any, _args: Any, _kwargs: Any) -> None:
        masks = _masks(trainer.model)
        if seen:
            seen[1:] = [masks]
        else:
            seen.append(masks)

    handle = trainer.optimizer.register_step_pre_hook(record)
    try:
        trainer.fit()
    finally:
        handle.remove()
    return seen[0], seen[-1]


@pytest.mark.parametrize("method", METHODS.names())
def test_the_final_checkpoint_holds_the_masks_the_last_step_trained(tmp_path: Path, method: str) -> None:
    trainer = Trainer(load_config_text(_toml(method)), tmp_path / method, quiet=True)
    first, last_trained = _train_recording(trainer)
    ckpt = torch.load(tmp_path / method / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    saved = {k: v for k, v in ckpt["model"].items() if k.endswith(("weight_mask", "neuron_mask"))}
    assert saved.keys() == last_trained.keys()
    for key, mask in saved.items():
        assert torch.equal(mask, last_trained[key]), f"{method}: {key} changed after the last optimiser step"
    if method in LATE:  # the settings do change the structure during the run: the comparison is not vacuous
        assert any(not torch.equal(first[k], last_trained[k]) for k in first), f"{method} never changed its masks"
    if isinstance(trainer.learner, SDSNN):  # its own record of the topology too
        for name, structure in trainer.learner.structure.items():
            assert torch.equal(structure, last_trained[f"{name}.weight_mask"])
    records = [json.loads(line) for line in (tmp_path / method / METRICS_FILE).read_text().splitlines()]
    summary = json.loads((tmp_path / method / "summary.json").read_text())
    assert records[-1]["changed_after_step"] is False and summary["final_structure_trained"] is True


def test_a_five_epoch_sdsnn_run_with_n_1_ends_at_its_last_trained_structure(tmp_path: Path) -> None:
    """Pruning at the end of epoch 4 (1-based), none at the end of epoch 5: the final accuracy, the checkpoint and a
    re-evaluation all see the structure that epoch 5 trained."""
    trainer = Trainer(load_config_text(_toml("sdsnn")), tmp_path / "run", quiet=True)
    assert [e for e in range(EPOCHS) if trainer.learner.develops(e)] == [3]  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the run ends on a trained structure
        summary = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert [r["changed_after_step"] for r in records] == [False, False, False, True, False]
    assert records[4]["density"] == records[3]["density"] < 1.0  # pruned at epoch 4, trained in epoch 5
    assert sum(records[4]["neurons_pruned"].values()) == 3  # floor(32 * 0.1) hidden neurons
    assert summary["final_structure_trained"] is True
    again = Trainer.resume(tmp_path / "run", quiet=True).evaluate()
    assert again["test_acc"] == summary["final_test_acc"] == records[-1]["test_acc"]


def test_the_papers_last_pruning_is_an_option_that_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``final_change = true`` prunes at the last epoch end too, as SD-SNN's code: the run ends on masks no step
    trained, and says so (a Python warning and a line of the train log)."""
    trainer = Trainer(
        load_config_text(_toml("sdsnn", "{ N = 1, last_rho_init = 0.12, final_change = true }")), tmp_path / "run"
    )  # 3 of 32 hidden neurons pruned at the end of epoch 4, a fourth at the end of epoch 5
    with pytest.warns(UserWarning, match="ends right after a change of its structure"):
        _first, last_trained = _train_recording(trainer)
    assert "warning: the run ends right after a change of its structure (sdsnn)" in capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert summary["final_structure_trained"] is False and records[-1]["changed_after_step"] is True
    assert records[-1]["density"] < records[-2]["density"]  # the last epoch end pruned once more
    assert any(not torch.equal(m, last_trained[k]) for k, m in _masks(trainer.model).items())


def test_a_step_level_change_at_the_last_step_warns(tmp_path: Path) -> None:
    """The engine also sees a change made by ``learner.step()`` after the run's very last optimiser step (no method
    does that by default: here RigL is made to rewire at every step)."""
    trainer = Trainer(load_config_text(_toml("rigl")), tmp_path / "run", quiet=True)
    assert not trainer.learner.is_update(trainer.total_steps)  # type: ignore[attr-defined]
    trainer.learner.is_update = lambda t: t > 0  # type: ignore[attr-defined, method-assign]
    trainer.learner.alpha = lambda t: 0.3  # type: ignore[attr-defined, method-assign]
    with pytest.warns(UserWarning, match="no optimiser step has trained"):
        trainer.fit()
    assert trainer.learner.last_change_step == trainer.total_steps == trainer.state.global_step
    assert trainer.summary()["final_structure_trained"] is False


def test_gmp_ends_its_ramp_before_the_last_step() -> None:
    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(40, 50), torch.nn.Linear(50, 30))

    learner = GMP(model(), density=0.25, update_every=5, end_at=1.0, total_steps=20)
    assert learner._window() == (0, 19)
    assert learner.layer_density_at("0", 19) == pytest.approx(0.25)  # the target is reached at step T - 1
    changes = []
    for _ in range(20):
        changes.append(learner.step())
    assert changes[18] and not changes[19] and learner.density() == pytest.approx(0.25, abs=0.001)
    assert GMP(model(), density=0.25, end_at=0.75, total_steps=100)._window() == (0, 75)  # the default: unchanged
    with pytest.raises(ValueError, match="no step to prune at before the last"):
        GMP(model(), density=0.25, start_at=0.5, end_at=1.0, total_steps=2)


def test_an_sdsnn_checkpoint_from_before_the_rule_warns_when_resumed_mid_run() -> None:
    def learner() -> SDSNN:
        torch.manual_seed(0)
        return SDSNN(
            torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)), N=1, total_epochs=6, steps_per_epoch=1
        )

    old = learner()
    old.on_epoch_end(0)
    state = old.state_dict()
    del state["extra"]["final_change"]  # as written before the key existed
    with pytest.warns(UserWarning, match="predates the rule"):
        learner().load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner().load_state_dict(old.state_dict())  # a current checkpoint: no warning
        state["epochs_seen"] = 6  # a finished old run (evaluated, exported): nothing more will change
        learner().load_state_dict(state)


def test_train_names_the_run_after_its_directory_and_counts_every_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "recipe.toml"
    cfg.write_text(tiny_toml("rigl", 0.2, "{ update_every = 2 }").replace("epochs = 3", "epochs = 1"))
    assert main(["train", "--quiet", "--config", str(cfg), "--run-dir", str(tmp_path / "fmnist rigl")]) == 0
    out = capsys.readouterr().out
    config = load_config_text((tmp_path / "fmnist rigl" / "config.toml").read_text())
    assert config.run.name == "fmnist-rigl"  # not the recipe's "tiny"; a space is not allowed in a name
    summary = json.loads((tmp_path / "fmnist rigl" / "summary.json").read_text())
    params = summary["parameters"]
    trainer = Trainer.resume(tmp_path / "fmnist rigl", quiet=True)
    total = sum(p.numel() for p in trainer.model.parameters())
    absent = sum(int((~m).sum()) for k, m in _masks(trainer.model).items() if k.endswith("weight_mask"))
    assert params == {"total": total, "live": total - absent} and 0 < absent < total
    assert f"whole network: {params['live']:,} live parameters of {params['total']:,} (every parameter" in out
    # a name set on the command line wins; without --run-dir the recipe's name stays (it names the directory)
    sets = ["--set", 'run.name="mine"']
    assert main(["train", "--quiet", "--config", str(cfg), "--run-dir", str(tmp_path / "b"), *sets]) == 0
    assert load_config_text((tmp_path / "b" / "config.toml").read_text()).run.name == "mine"
    sets = ["--set", f'run.out_dir="{tmp_path / "runs"}"']
    assert main(["train", "--quiet", "--config", str(cfg), *sets]) == 0
    assert (tmp_path / "runs" / "tiny" / "summary.json").is_file()


def test_report_labels_runs_of_one_recipe_by_what_differs(tmp_path: Path) -> None:
    """Five runs launched from one recipe (one run.name) with different --set values, one of them twice and one at
    two seeds: every group and every run gets its own label, named by the differing settings."""
    from sparsesnn.experiments.report import RunData, group_runs, run_labels

    def run(directory: str, seed: int = 0, **settings: Any) -> RunData:
        config = {"run.name": "mnist_dense", "run.seed": seed, "data.name": "mnist", "sparse.method": "dense"}
        config |= {"sparse.density": 1.0, "sparse.params": {}, **settings}
        last = {"test_acc": 0.9, "density": config["sparse.density"]}
        return RunData(tmp_path / directory, config, [last], {"best_test_acc": 0.9})

    runs = [
        run("dense"),
        run("dense_fashion", **{"data.name": "fashion"}),
        run("dense_d01", **{"sparse.density": 0.1}),  # dense ignores it, but it is another config
        run("sdsnn", **{"sparse.method": "sdsnn"}),
        run("sdsnn_n1", **{"sparse.method": "sdsnn", "sparse.params": {"N": 1}}),
        run("sdsnn_n1_again", **{"sparse.method": "sdsnn", "sparse.params": {"N": 1}}),
        run("rigl_s0", **{"sparse.method": "rigl", "sparse.density": 0.1}),
        run("rigl_s1", seed=1, **{"sparse.method": "rigl", "sparse.density": 0.1}),
    ]
    groups = group_runs(runs)
    labels = sorted(g.label for g in groups)
    assert len(set(labels)) == len(labels) == 6
    assert labels == [
        "dense (data.name=fashion)",
        "dense (data.name=mnist, sparse.density=0.1)",
        "dense (data.name=mnist, sparse.density=1.0)",
        "rigl (data.name=mnist) @ 0.1",
        "sdsnn (data.name=mnist, sparse.params=unset) @ 1",
        "sdsnn (data.name=mnist, sparse.params={N=1}) @ 1",
    ]
    by_dir = dict(zip((r.run_dir.name for r in runs), run_labels(runs), strict=True))
    assert len(set(by_dir.values())) == len(runs)
    assert by_dir["rigl_s0"] == "rigl (data.name=mnist) @ 0.1, seed 0"
    assert by_dir["rigl_s1"] == "rigl (data.name=mnist) @ 0.1, seed 1"
    assert by_dir["sdsnn_n1"] == "sdsnn (data.name=mnist, sparse.params={N=1}) @ 1 [sdsnn_n1]"
    assert by_dir["sdsnn_n1_again"] == "sdsnn (data.name=mnist, sparse.params={N=1}) @ 1 [sdsnn_n1_again]"
    assert by_dir["dense"] == "dense (data.name=mnist, sparse.density=1.0)"
