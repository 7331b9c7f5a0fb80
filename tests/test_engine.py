"""The engine: run files, exact resume (epoch boundary, mid-epoch Ctrl-C, a real SIGKILL), divergence, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsesnn.core.errors import CheckpointError, TrainingDivergedError
from sparsesnn.train.checkpoint import save_checkpoint
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import CHECKPOINT_FILE, METRICS_FILE, RunInterrupted, Trainer
from tests.conftest import fit_killed_after_epoch, run_metrics, tiny_toml


def _train(tmp: Path, name: str, toml: str) -> Trainer:
    trainer = Trainer(load_config_text(toml), tmp / name, quiet=True)
    trainer.fit()
    return trainer


def test_run_directory_files(tmp_path):
    trainer = _train(tmp_path, "a", tiny_toml())
    rd = tmp_path / "a"
    for f in ("config.toml", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        assert (rd / f).is_file(), f
    records = run_metrics(rd)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(r["density"] == pytest.approx(0.3, abs=2e-3) for r in records)
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["final_test_acc"] == records[-1]["test_acc"]
    # the resolved config re-validates to the same config
    assert load_config_text((rd / "config.toml").read_text()) == trainer.config


def test_same_seed_same_run(tmp_path):
    a = _train(tmp_path, "a", tiny_toml())
    b = _train(tmp_path, "b", tiny_toml())
    assert run_metrics(tmp_path / "a") == run_metrics(tmp_path / "b")
    for (k1, v1), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_resume_after_epoch_boundary_kill(tmp_path, monkeypatch):
    toml = tiny_toml()
    _train(tmp_path, "full", toml)
    # a process that dies right after epoch 1's checkpoint, before anything else
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 1, monkeypatch)
    resumed = Trainer.resume(tmp_path / "cut", quiet=True)
    assert resumed.state.epoch == 1
    resumed.fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")


@pytest.mark.parametrize("method", ["rigl", "set", "dense", "lth"])
def test_resume_after_ctrl_c_mid_epoch(tmp_path, method):
    toml = tiny_toml(method=method, params="{ rounds = 3 }" if method == "lth" else "{ update_every = 2 }")
    full = _train(tmp_path, "full", toml)
    trainer = Trainer(load_config_text(toml), tmp_path / "cut", quiet=True)
    steps = {"n": 0}
    original_step = trainer.learner.step

    def step_and_maybe_interrupt():
        steps["n"] += 1
        if steps["n"] == 8:  # epoch 2, batch 2: a real SIGINT to our own process
            os.kill(os.getpid(), signal.SIGINT)
        return original_step()

    trainer.learner.step = step_and_maybe_interrupt  # type: ignore[method-assign]
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when started in the background
    with pytest.raises(RunInterrupted):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    resumed = Trainer.resume(tmp_path / "cut", quiet=True)
    assert (resumed.state.epoch, resumed.state.batch) == (1, 2)
    resumed.fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")
    for (k, v1), v2 in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k


def test_resume_after_sigkill_subprocess(tmp_path):
    """A real `sparsesnn train` killed with SIGKILL mid-run, then resumed, writes the same metrics.jsonl."""
    toml = (
        tiny_toml().replace("epochs = 3", "epochs = 4").replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 12")
    )
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(toml)
    env = {**os.environ, "SPARSESNN_NO_COMPILE": "1"}
    cmd = [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--config", str(cfg)]
    subprocess.run([*cmd, "--run-dir", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cmd, "--run-dir", str(tmp_path / "cut")], env=env, stderr=subprocess.PIPE)
    metrics = tmp_path / "cut" / METRICS_FILE
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert done < 4, "the run finished before it could be killed; make it longer"
    subprocess.run(
        [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--resume", str(tmp_path / "cut")],
        check=True,
        env=env,
        capture_output=True,
    )
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    trainer = Trainer(load_config_text(tiny_toml()), tmp_path / "nan", quiet=True)
    original = trainer.loss_fn
    calls = {"n": 0}

    def poisoned(out, y):
        calls["n"] += 1
        loss = original(out, y)
        return loss * float("nan") if calls["n"] == 10 else loss  # epoch 2, batch 3 (call 7 is the evaluation)

    trainer.loss_fn = poisoned
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, batch 3 .*\(after epoch 1\)"):
        trainer.fit()
    resumed = Trainer.resume(tmp_path / "nan", quiet=True)
    assert resumed.state.epoch == 1 and resumed.state.batch == 0
    assert len(run_metrics(tmp_path / "nan")) == 1


def test_fresh_run_refuses_to_overwrite(tmp_path):
    from sparsesnn.train.trainer import new_run_dir

    _train(tmp_path, "a", tiny_toml())
    cfg = load_config_text(tiny_toml())
    with pytest.raises(CheckpointError, match="already holds a run"):
        new_run_dir(cfg, tmp_path / "a")


def test_resume_rejects_mismatched_checkpoint(tmp_path):
    _train(tmp_path, "a", tiny_toml())
    (tmp_path / "a" / "config.toml").write_text(tiny_toml(density=0.5))
    with pytest.raises(CheckpointError, match=r"different config.*sparse\.density: 0\.3 != 0\.5"):
        Trainer.resume(tmp_path / "a", quiet=True)


def test_checkpoint_from_before_a_new_config_key_still_resumes(tmp_path):
    """A checkpoint whose stored config lacks a key added since counts that key at its default."""
    _train(tmp_path, "a", tiny_toml())
    path = tmp_path / "a" / CHECKPOINT_FILE
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["data"]["validation_samples"]  # as written before the key existed
    del ckpt["config"]["run"]["checkpoint_every_steps"]
    save_checkpoint(path, ckpt)  # with the checksum of the edited state
    resumed = Trainer.resume(tmp_path / "a", quiet=True)
    assert resumed.state.epoch == ckpt["epoch"]
    ckpt["config"]["data"]["no_such_key"] = 1  # a key this version does not know: refused, with the reason
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match=r"(?s)config this version cannot read.*data\.no_such_key"):
        Trainer.resume(tmp_path / "a", quiet=True)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    _train(tmp_path, "a", tiny_toml())
    (tmp_path / "a" / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Trainer.resume(tmp_path / "a", quiet=True)


def test_mse_loss_on_firing_rates(tmp_path):
    toml = tiny_toml(method="dense").replace("[optim]", '[loss]\nname = "mse"\n\n[optim]')
    trainer = _train(tmp_path, "mse", toml)
    out = trainer.model(torch.zeros(2, 4, 1, 8, 8))
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # spiking readout
    assert run_metrics(tmp_path / "mse")[-1]["train_loss"] < 0.2


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_optimizers_and_warmup(tmp_path, optim):
    toml = (
        tiny_toml()
        .replace('name = "adam"', f'name = "{optim}"')
        .replace("[sparse]", '[schedule]\nname = "cosine"\nwarmup_epochs = 1\n\n[sparse]')
    )
    trainer = _train(tmp_path, optim, toml)
    lrs = [r["lr"] for r in run_metrics(tmp_path / optim)]
    assert lrs[0] == pytest.approx(0.003)  # end of warm-up: the peak
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # cosine down to min_lr = 0
    assert trainer.state.global_step == 18


def test_lth_restarts_learning_rate_every_round(tmp_path):
    _train(tmp_path, "lth", tiny_toml(method="lth", density=0.25, params="{ rounds = 3 }"))
    records = run_metrics(tmp_path / "lth")
    assert [r["lr"] for r in records] == pytest.approx([0.003] * 3)  # each round's cosine ends where the next starts
    assert [round(r["density"], 2) for r in records] == [0.5, 0.25, 0.25]


def test_conv_model_run_reports_sops(tmp_path):
    toml = tiny_toml().replace(
        'name = "mlp"\nparams = { hidden = [32] }', 'name = "convnet"\nparams = { channels = [4, 8] }'
    )
    _train(tmp_path, "conv", toml)
    rec = run_metrics(tmp_path / "conv")[-1]
    assert rec["macs"] > 0 and rec["dense_ops"] > rec["sops"] >= 0  # analog first layer counted as MACs
    assert rec["energy_uJ"] > 0


class _AugmentingDataset(torch.utils.data.Dataset):
    """Sample i is i plus noise drawn from torch's global RNG, as an augmenting event dataset draws it."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((3,), float(i)) + torch.rand(3), i % 2


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_the_same_with_workers_and_after_a_mid_epoch_resume(workers):
    from sparsesnn.train.trainer import BatchSeed, iterate_batches

    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    seed = BatchSeed((5, 1), (1,))
    reference = [(b, x.clone()) for b, _i, x, _y in iterate_batches(_AugmentingDataset(), order, 8, 0, 0, seed)]
    assert len(reference) == 5 and not torch.equal(reference[0][1], reference[1][1])
    full = list(iterate_batches(_AugmentingDataset(), order, 8, 0, workers, seed))
    resumed = list(iterate_batches(_AugmentingDataset(), order, 8, 2, workers, seed))  # from batch 2 on
    assert [b for b, *_ in full] == [0, 1, 2, 3, 4] and [b for b, *_ in resumed] == [2, 3, 4]
    for (b, idx, x, y), (rb, rx) in zip(full, reference, strict=True):
        assert b == rb and torch.equal(x, rx)
        assert torch.equal(x.floor(), idx.to(x.dtype)[:, None].expand_as(x)) and torch.equal(y, idx % 2)
    for b, _idx, x, _y in resumed:
        assert torch.equal(x, reference[b][1])
    other = list(iterate_batches(_AugmentingDataset(), order, 8, 0, workers, BatchSeed((6, 1), (1,))))
    assert not torch.equal(other[0][2], full[0][2])  # another seed, other augmentations
