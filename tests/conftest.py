"""Shared fixtures: tiny configs on the embedded digits so engine tests run in seconds."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _shared_data() -> Path:
    """The real data files: $SPARSESNN_SHARED_DATA, else ../shared/data beside the checkout, else /work/shared/data."""
    if os.environ.get("SPARSESNN_SHARED_DATA"):
        return Path(os.environ["SPARSESNN_SHARED_DATA"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside if beside.is_dir() else Path("/work/shared/data")


DATA = _shared_data()
BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:  # the benchmark scripts import their shared helpers as `benchutil`
    sys.path.insert(0, str(BENCH))


def load_bench(script: str) -> ModuleType:
    """Import ``bench/<script>.py`` by path (``bench`` is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCH / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


TINY_TOML = """
[run]
name = "tiny"
seed = 3
epochs = 3
max_steps_per_epoch = 6

[data]
name = "digits"
batch_size = 32
eval_batch_size = 128
time_steps = 2
max_test_samples = 128

[model]
name = "mlp"
params = {{ hidden = [32] }}

[neuron]
backend = "eager"

[optim]
name = "adam"
lr = 0.003

[sparse]
method = "{method}"
density = {density}
params = {params}
"""


def tiny_toml(method: str = "rigl", density: float = 0.3, params: str = "{ update_every = 2 }") -> str:
    if method == "dense":
        density, params = 1.0, "{}"
    return TINY_TOML.format(method=method, density=density, params=params)


def tiny_sdsnn_toml() -> str:
    """A tiny SD-SNN run (``N = 1``, 6 epochs) that develops: ``floor(32 * 0.1) = 3`` hidden neurons go at epoch 4,
    and ghosts arm from the first step of epoch 5 on (1-based)."""
    return tiny_toml("sdsnn", 1.0, "{ N = 1, last_rho_init = 0.1 }").replace("epochs = 3", "epochs = 6")


def run_metrics(run_dir: Path) -> list[dict]:
    """The lines of a run's ``metrics.jsonl`` without their wall-time fields (equal for equal runs)."""
    import json

    from sparsesnn.train.trainer import METRICS_FILE, TIMING_KEYS

    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def fit_killed_after_epoch(trainer: Any, epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``trainer.fit()`` as a process that dies right after epoch ``epoch``'s checkpoint and metrics line."""
    from sparsesnn.train.trainer import Trainer

    original = Trainer._append_metrics

    def die_after(self: Trainer, record: dict) -> None:
        original(self, record)
        if record["epoch"] == epoch:
            raise SystemExit("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_append_metrics", die_after)
        with pytest.raises(SystemExit):
            trainer.fit()


@pytest.fixture
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker gets one intra-op thread, so that N workers do not oversubscribe N cores.
    import os

    import torch

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def tiny_convnet_toml() -> str:
    """:func:`tiny_toml` with the convnet (16, 32 channels), T = 4, RigL at 50 %: 3 epochs of 20 steps reach about
    93 % of the digits (a trained sparse convnet for deploy's tests)."""
    return (
        tiny_toml(density=0.5, params="{ update_every = 4 }")
        .replace('name = "mlp"\nparams = { hidden = [32] }', 'name = "convnet"\nparams = { channels = [16, 32] }')
        .replace("lr = 0.003", "lr = 0.01")
        .replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 20")
        .replace("time_steps = 2", "time_steps = 4")
    )
