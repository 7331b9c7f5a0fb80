"""Two CPU processes (gloo) through torchrun: identical topologies on every rank, the single-process loss curve,
and resume with another number of processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_toml

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ENV = {**os.environ, "SPARSESNN_NO_COMPILE": "1", "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not found")


def _config(tmp_path: Path, method: str, params: str, epochs: int = 3) -> Path:
    toml = tiny_toml(method=method, density=0.3, params=params).replace("epochs = 3", f"epochs = {epochs}")
    toml = toml.replace(f'method = "{method}"', f'method = "{method}"\ndense_first = false\ndense_last = false')
    cfg = tmp_path / f"{method}.toml"
    cfg.write_text(toml)
    return cfg


def _train(cfg: Path, run_dir: Path, procs: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--config", str(cfg), "--run-dir", str(run_dir)]
    if procs > 1:
        cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={procs}", "-m", *cmd[2:]]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, check=True)


def _curve(run_dir: Path, key: str = "train_loss") -> list[float]:
    return [json.loads(line)[key] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "method,params,epochs",
    # SD-SNN prunes at the end of epoch 2N + 2 = 4 (not at the last): 3 of the 32 hidden neurons at rate 0.1
    [("rigl", "{ update_every = 2 }", 3), ("sdsnn", "{ N = 1, last_rho_init = 0.1 }", 5)],
    ids=["rigl", "sdsnn"],
)
def test_two_processes_keep_identical_topologies_and_the_loss_curve(tmp_path, method, params, epochs):
    cfg = _config(tmp_path, method, params, epochs)
    _train(cfg, tmp_path / "one", 1)
    _train(cfg, tmp_path / "two", 2)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2
    # every topology change was followed by a digest comparison across ranks (a mismatch would have failed the run)
    assert summary["topology_checks"] > 0
    assert _curve(tmp_path / "two") == pytest.approx(_curve(tmp_path / "one"), rel=1e-4)
    assert _curve(tmp_path / "two", "density") == pytest.approx(_curve(tmp_path / "one", "density"), abs=1e-9)


def test_resume_with_another_number_of_processes(tmp_path):
    cfg = _config(tmp_path, "rigl", "{ update_every = 2 }", epochs=4)
    cfg.write_text(cfg.read_text().replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 12"))
    _train(cfg, tmp_path / "full", 1)
    cut = tmp_path / "cut"
    cmd = [
        TORCHRUN,
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "sparsesnn",
        "train",
        "--quiet",
        "--config",
        str(cfg),
        "--run-dir",
        str(cut),
    ]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    metrics = cut / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches torchrun and both workers
    proc.wait(timeout=120)
    assert (cut / "checkpoint.pt").exists()
    assert metrics.read_text().count("\n") < 4, "finished before it could be interrupted"
    subprocess.run(
        [sys.executable, "-m", "sparsesnn", "train", "--quiet", "--resume", str(cut)],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert _curve(cut) == pytest.approx(_curve(tmp_path / "full"), rel=1e-4)
    assert _curve(cut, "test_acc") == pytest.approx(_curve(tmp_path / "full", "test_acc"), abs=0.01)


@pytest.mark.slow
def test_two_processes_with_a_compiled_model(tmp_path):
    """run.compile with DDP (torch.compile of the DDP wrapper, gloo): the topology checks pass on every rewiring and
    the run follows the single-process compiled run's loss curve."""
    cfg = _config(tmp_path, "rigl", "{ update_every = 2 }")
    cfg.write_text(cfg.read_text().replace("[run]\n", "[run]\ncompile = true\n", 1))
    _train(cfg, tmp_path / "one", 1)
    _train(cfg, tmp_path / "two", 2)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["topology_checks"] > 0
    assert _curve(tmp_path / "two") == pytest.approx(_curve(tmp_path / "one"), rel=1e-4)
