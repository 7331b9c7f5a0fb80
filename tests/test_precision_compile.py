"""Mixed precision (``run.precision``), compiled training (``run.compile``) and channels-last, on the CPU.

CPU autocast supports bf16 and fp16, so the same code paths a GPU takes run here; tests/test_cuda.py repeats the
essentials on CUDA.
"""

from __future__ import annotations

import json
import math

import pytest
import tomli_w
import torch
import torch._dynamo.utils

from sparsesnn.core.errors import ConfigError
from sparsesnn.neuron.functional import lif_multistep
from sparsesnn.sparse.masks import MASK_BUFFER
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import METRICS_FILE, Trainer
from tests.conftest import fit_killed_after_epoch, run_metrics, tiny_toml


def _with_run(toml: str, **run: object) -> str:
    """``toml`` with these ``[run]`` keys added."""
    return toml.replace("[run]\n", "[run]\n" + tomli_w.dumps(run), 1)


def _killed_and_resumed_equals_unbroken(tmp_path, monkeypatch, toml: str) -> Trainer:
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    full.fit()
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 1, monkeypatch)
    Trainer.resume(tmp_path / "cut", quiet=True).fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")
    return full


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_run_learns_and_resumes_exactly(tmp_path, monkeypatch, precision):
    full = _killed_and_resumed_equals_unbroken(tmp_path, monkeypatch, _with_run(tiny_toml(), precision=precision))
    records = run_metrics(tmp_path / "full")
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in full.model.parameters())  # master weights stay float32
    if precision == "fp16":  # the gradient scaler's state is in the checkpoint
        assert full.state_dict()["train_step"]["scaler"]["scale"] > 0
    else:
        assert full.state_dict()["train_step"]["scaler"] == {}


def test_mixed_precision_forward_runs_in_the_autocast_dtype(tmp_path):
    trainer = Trainer(load_config_text(_with_run(tiny_toml(), precision="bf16")), tmp_path / "a", quiet=True)
    seen = []
    handle = trainer.model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x = torch.rand(2, 4, 64)
    with trainer.step.autocast():
        trainer.step.forward(x)
    handle.remove()
    assert seen == [torch.bfloat16]


def test_precision_and_compile_keys_are_validated():
    with pytest.raises(ConfigError, match=r"run\.precision"):
        load_config_text("[run]\nprecision = 'fp8'")
    with pytest.raises(ConfigError, match="compile = false"):
        load_config_text("[run]\ncompile_mode = 'reduce-overhead'")
    assert load_config_text("[run]\ncompile = true\ncompile_mode = 'max-autotune'").run.compile_mode == "max-autotune"


def test_lif_in_bf16_matches_float32_within_tolerance():
    """Stated tolerance: with the same (bf16-representable) input and upstream gradient, bf16 spikes are identical to
    float32 ones (the membrane is float32 in both) and dL/dx differs by under 1 % in relative L2 norm (the saved
    charge is rounded to bf16 before the surrogate reads it)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 64, 300, generator=gen) * 1.5).bfloat16().float()
    g = torch.randn(x.shape, generator=gen).bfloat16().float()
    for backend in ("eager",):  # the compiled CPU kernel runs the same code; tests/test_cuda.py checks Triton
        x32 = x.clone().requires_grad_()
        s32 = lif_multistep(x32, 0.5, backend=backend)
        s32.backward(g)
        x16 = x.bfloat16().requires_grad_()
        s16 = lif_multistep(x16, 0.5, backend=backend)
        s16.backward(g.bfloat16())
        assert s16.dtype == torch.bfloat16 and x16.grad.dtype == torch.bfloat16
        assert torch.equal(s16.float(), s32)
        rel = (x16.grad.float() - x32.grad).norm() / x32.grad.norm()
        assert rel < 1e-2, (backend, float(rel))


def test_lif_in_bf16_saves_only_bf16():
    """No float32 copy of a whole tensor: what backward keeps is the bf16 charge (and the scalar 1/tau)."""
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    x = torch.randn(4, 8, 100, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lif_multistep(x, 0.5, backend="eager")
    big = [(d, n) for d, n in saved if n > 1]
    assert big == [(torch.bfloat16, x.numel())]


def test_lif_keeps_channels_last_layout():
    x4 = torch.randn(4 * 3, 8, 5, 5).to(memory_format=torch.channels_last)
    x = x4.reshape(4, 3, 8, 5, 5).requires_grad_()
    out = lif_multistep(x, 0.5, backend="eager")
    assert out.stride() == x.stride()  # no copy into the contiguous layout
    assert torch.equal(out, lif_multistep(x.detach().contiguous(), 0.5, backend="eager"))
    out.backward(torch.ones_like(out))
    assert x.grad.stride() == x.stride()


def test_channels_last_run_trains(tmp_path):
    toml = tiny_toml().replace(
        'name = "mlp"\nparams = { hidden = [32] }', 'name = "convnet"\nparams = { channels = [4, 8] }'
    )
    trainer = Trainer(load_config_text(_with_run(toml, channels_last=True)), tmp_path / "cl", quiet=True)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    trainer.fit()
    records = run_metrics(tmp_path / "cl")
    assert records[-1]["density"] == pytest.approx(0.3, abs=2e-3)
    for module in trainer.model.modules():  # absent synapses stay exactly zero in the channels-last weights
        mask = getattr(module, MASK_BUFFER, None)
        if mask is not None:
            assert not module.weight.detach()[~mask].any()


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


@pytest.mark.slow
def test_compiled_training_does_not_recompile_when_masks_change(tmp_path):
    """RigL rewires every 2 steps; after the first step (forward and backward compiled once) no graph is added."""
    trainer = Trainer(load_config_text(_with_run(tiny_toml(), compile=True)), tmp_path / "c", quiet=True)
    changes = []
    graphs_after_step = []
    original = trainer.learner.step

    def step() -> bool:
        changed = original()
        changes.append(changed)
        graphs_after_step.append(_graphs())
        return changed

    trainer.learner.step = step  # type: ignore[method-assign]
    before = _graphs()
    trainer.fit()
    assert graphs_after_step[0] > before  # the counter sees this model's compilation
    assert sum(changes) >= 3  # the topology really changed, several times
    assert len(set(graphs_after_step)) == 1, graphs_after_step  # ... and nothing recompiled
    raw = [json.loads(line) for line in (tmp_path / "c" / METRICS_FILE).read_text().splitlines()]
    assert raw[0]["compile_s"] > 0 and "compile_s" not in raw[1]  # the first step's time, compiling included


@pytest.mark.slow
@pytest.mark.parametrize("method", ["esl", "sdsnn", "pqi", "lth"])
def test_compiled_training_with_every_kind_of_learner(tmp_path, method):
    """Step-level rewiring (ESL), epoch-level structure (SD-SNN), PQ rounds and LTH rewinds under torch.compile: the
    structure changes, absent weights stay zero, the losses stay finite."""
    params = {
        "esl": "{ update_every = 2, stop_at = 0.9 }",
        "sdsnn": "{ N = 1, last_rho_init = 0.1 }",
        "pqi": "{ }",
        "lth": "{ rounds = 3 }",
    }[method]
    density = {"esl": 0.3, "sdsnn": 1.0, "pqi": 1.0, "lth": 0.25}[method]
    toml = tiny_toml(method, density, params).replace("hidden = [32]", "hidden = [32, 32]")  # ESL, PQ: dense ends
    if method in ("sdsnn", "pqi"):
        toml = toml.replace("epochs = 3", "epochs = 5")
    trainer = Trainer(load_config_text(_with_run(toml, compile=True)), tmp_path / "c", quiet=True)
    before = [layer.mask.clone() for layer in trainer.learner.layers]
    trainer.fit()
    assert any(not torch.equal(a, layer.mask) for a, layer in zip(before, trainer.learner.layers, strict=True))
    for layer in trainer.learner.layers:
        assert not layer.weight.detach()[~layer.mask].any()
    assert all(math.isfinite(r["train_loss"]) for r in run_metrics(tmp_path / "c"))


@pytest.mark.slow
def test_compiled_bf16_run_resumes_exactly(tmp_path, monkeypatch):
    _killed_and_resumed_equals_unbroken(tmp_path, monkeypatch, _with_run(tiny_toml(), precision="bf16", compile=True))
