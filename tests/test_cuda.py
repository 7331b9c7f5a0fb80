"""On CUDA (``cuda``-marked; skipped without a GPU): every method trains, resumes, evaluates and exports; runs move
between CUDA and the CPU; the Triton LIF matches the CPU kernels; compiled bf16 training neither recompiles nor loses
exactness; the density invariants hold. ``scripts/device-check.sh`` runs these on a machine with a GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo.utils

from sparsesnn.interop.export import export_run
from sparsesnn.neuron.functional import lif_multistep
from sparsesnn.neuron.kernels.loops import lif_backward_loop, lif_forward_loop
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.surrogates import ATan, Rectangular, Sigmoid, SuperSpike, Triangle
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import Trainer
from tests.conftest import fit_killed_after_epoch, run_metrics, tiny_toml

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run scripts/device-check.sh)"),
]

METHOD_PARAMS = {
    "dense": (1.0, "{}"),
    "static": (0.3, "{}"),
    "set": (0.3, "{ update_every = 2 }"),
    "rigl": (0.3, "{ update_every = 2 }"),
    "esl": (0.3, "{ update_every = 2 }"),
    "gmp": (0.3, "{}"),
    "lth": (0.25, "{ rounds = 3 }"),
    "pqi": (1.0, "{}"),
    "sdsnn": (1.0, "{ N = 1, last_rho_init = 0.1 }"),
    "evokd": (0.3, "{ update_every = 2 }"),
}


def _cuda_toml(method: str, **run: str) -> str:
    """A tiny run of ``method`` on CUDA with the fused (Triton) neuron."""
    density, params = METHOD_PARAMS[method]
    toml = tiny_toml(method, density, params).replace('backend = "eager"', 'backend = "auto"')
    toml = toml.replace("hidden = [32]", "hidden = [32, 32]")  # methods that keep the first and last layer dense
    extra = "".join(f"{k} = {v}\n" for k, v in {"device": '"cuda"', **run}.items())
    toml = toml.replace("[run]\n", "[run]\n" + extra, 1)
    if method in ("sdsnn", "pqi"):
        toml = toml.replace("epochs = 3", "epochs = 5")
    if method == "evokd":
        toml += '\n[distill]\nsource = "online"\nteacher_model = "mlp"\nteacher_params = { hidden = [64] }\n'
    return toml


@pytest.mark.parametrize("method", sorted(METHOD_PARAMS))
def test_every_method_trains_resumes_evaluates_and_exports_on_cuda(tmp_path, monkeypatch, method):
    toml = _cuda_toml(method)
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    assert full.device.type == "cuda"
    full.fit()
    # CUDA -> CUDA: killed after epoch 1 and resumed, the same metrics as the unbroken run
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 1, monkeypatch)
    Trainer.resume(tmp_path / "cut", quiet=True).fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")
    # evaluation on the CPU of the CUDA run: the same accuracy up to a sample or two (float summation order)
    on_cpu = Trainer.resume(tmp_path / "full", quiet=True, device="cpu")
    on_cuda = Trainer.resume(tmp_path / "full", quiet=True)
    acc_cpu, acc_cuda = on_cpu.evaluate()["test_acc"], on_cuda.evaluate()["test_acc"]
    assert abs(acc_cpu - acc_cuda) <= 2 / 128 + 1e-9
    assert on_cpu.learner.density() == on_cuda.learner.density()
    # export from CUDA and from the CPU
    assert export_run(tmp_path / "full", "pt", tmp_path / "cuda.pt", device="cuda").path.is_file()
    assert export_run(tmp_path / "full", "pt", tmp_path / "cpu.pt", device="cpu").path.is_file()
    # CUDA -> CPU: a run cut on CUDA goes on training on the CPU
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "move", quiet=True), 1, monkeypatch)
    moved = Trainer.resume(tmp_path / "move", quiet=True, device="cpu")
    assert moved.device.type == "cpu"
    moved.fit()
    assert len(run_metrics(tmp_path / "move")) == len(run_metrics(tmp_path / "full"))
    _assert_absent_weights_zero(moved)


def test_a_cpu_run_resumes_on_cuda(tmp_path, monkeypatch):
    toml = _cuda_toml("rigl").replace('device = "cuda"', 'device = "cpu"')
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cpu", quiet=True), 1, monkeypatch)
    resumed = Trainer.resume(tmp_path / "cpu", quiet=True, device="cuda")
    assert next(resumed.model.parameters()).device.type == "cuda"
    resumed.fit()
    assert len(run_metrics(tmp_path / "cpu")) == 3
    _assert_absent_weights_zero(resumed)


def _assert_absent_weights_zero(trainer: Trainer) -> None:
    for layer in trainer.learner.layers:
        absent = ~layer.mask
        assert not layer.weight.detach()[absent].any(), layer.name
        for value in trainer.optimizer.state.get(layer.weight, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == absent.shape:
                assert not value[absent].any(), layer.name


SURROGATES = [ATan(2.0), Sigmoid(4.0), Rectangular(1.0), SuperSpike(10.0), Triangle(1.0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "hard,decay_input,detach_reset", [(True, True, False), (False, False, True), (True, False, True)]
)
@pytest.mark.parametrize("learn_tau", [False, True])
def test_triton_lif_matches_the_cpu_kernels(dtype, hard, decay_input, detach_reset, learn_tau):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 16, 1000, generator=gen) * 2).to(dtype)
    g = torch.randn(x.shape, generator=gen).to(dtype)
    kw = dict(v_threshold=1.0, v_reset=0.0, hard_reset=hard, decay_input=decay_input)
    for sg in SURROGATES:
        out = {}
        for device in ("cpu", "cuda"):
            xr = x.to(device).detach().requires_grad_()  # x.to("cpu") is x itself
            k = torch.tensor(0.4, device=device, requires_grad=True) if learn_tau else 0.4
            s = lif_multistep(
                xr, k, detach_reset=detach_reset, surrogate=sg, backend="eager" if device == "cpu" else "auto", **kw
            )
            s.backward(g.to(device))
            out[device] = (s.cpu().float(), xr.grad.cpu().float(), k.grad.cpu() if learn_tau else None)
        (s_cpu, gx_cpu, gk_cpu), (s_gpu, gx_gpu, gk_gpu) = out["cpu"], out["cuda"]
        assert (s_cpu != s_gpu).float().mean() < 1e-4, sg  # fused multiply-adds may flip a spike at the threshold
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        assert (gx_gpu - gx_cpu).norm() / gx_cpu.norm() < tol, sg
        if learn_tau:
            assert abs(float(gk_gpu - gk_cpu)) <= tol * max(1.0, abs(float(gk_cpu))), sg


def test_triton_lif_keeps_channels_last_and_matches_contiguous():
    x4 = torch.randn(4 * 8, 16, 9, 9, device="cuda").to(memory_format=torch.channels_last)
    x = x4.reshape(4, 8, 16, 9, 9).requires_grad_()
    s = lif_multistep(x, 0.5)
    assert s.stride() == x.stride()
    assert torch.equal(s, lif_multistep(x.detach().contiguous(), 0.5))
    s.backward(torch.ones_like(s))
    assert x.grad.stride() == x.stride()


def test_kernels_agree_with_the_loops_they_replace():
    """The operator's CUDA path against the pure-torch loops run on CUDA (same device, same dtype)."""
    x = torch.randn(5, 4000, device="cuda") * 2
    g = torch.randn_like(x)
    k = torch.tensor(0.3, device="cuda")
    s_loop, charge_loop = lif_forward_loop(x, k, LIFParameters())
    s_op = lif_multistep(x, 0.3)
    assert (s_op != s_loop).float().mean() < 1e-4
    gx_loop, _ = lif_backward_loop(g, charge_loop, k, LIFParameters(), False)
    xr = x.clone().requires_grad_()
    lif_multistep(xr, 0.3).backward(g)
    assert (xr.grad - gx_loop).norm() / gx_loop.norm() < 1e-4


def test_compiled_bf16_training_on_cuda_resumes_exactly_without_recompiling(tmp_path, monkeypatch):
    toml = _cuda_toml("rigl", precision='"bf16"', compile="true")
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    graphs = []
    original = full.learner.step

    def step() -> bool:
        changed = original()
        graphs.append(int(torch._dynamo.utils.counters["stats"]["unique_graphs"]))
        return changed

    full.learner.step = step  # type: ignore[method-assign]
    full.fit()
    assert len(set(graphs)) == 1, graphs  # masks changed every 2 steps; nothing recompiled
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 1, monkeypatch)
    Trainer.resume(tmp_path / "cut", quiet=True).fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")
    _assert_absent_weights_zero(full)


def test_fp16_scaler_state_survives_resume_on_cuda(tmp_path, monkeypatch):
    toml = _cuda_toml("set", precision='"fp16"')
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    full.fit()
    fit_killed_after_epoch(Trainer(load_config_text(toml), tmp_path / "cut", quiet=True), 1, monkeypatch)
    resumed = Trainer.resume(tmp_path / "cut", quiet=True)
    assert resumed.step.scaler.is_enabled() and resumed.step.scaler.get_scale() > 0
    resumed.fit()
    assert run_metrics(tmp_path / "cut") == run_metrics(tmp_path / "full")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on CUDA needs two GPUs (NCCL, one device per rank)")
def test_two_processes_on_two_gpus_keep_identical_topologies(tmp_path):
    """torchrun with two ranks on CUDA: NCCL, each rank on its own GPU (cuda:LOCAL_RANK, chosen by the engine), and
    every topology change checked identical across ranks (a divergence would fail the run)."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    toml = _cuda_toml("rigl").replace('method = "rigl"', 'method = "rigl"\ndense_first = false\ndense_last = false')
    cfg = tmp_path / "rigl.toml"
    cfg.write_text(toml)
    cmd = [torchrun, "--standalone", "--nproc-per-node=2", "-m", "sparsesnn", "train", "--quiet", "--config", str(cfg)]
    subprocess.run([*cmd, "--run-dir", str(tmp_path / "two")], env=dict(os.environ), check=True, timeout=600)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["topology_checks"] > 0
