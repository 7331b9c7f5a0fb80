"""The training objectives, above all TET (Deng et al., ICLR 2022): its maths against a hand-written per-step loop,
its precision under low-precision output, its config keys and a tiny training run."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from sparsesnn.core.errors import ConfigError
from sparsesnn.train.config import config_differences, config_keys, load_config_text
from sparsesnn.train.losses import TET_LAMBDA, TET_TARGET, build_loss, tet_loss
from sparsesnn.train.trainer import Trainer
from tests.conftest import run_metrics, tiny_toml

T, B, C = 3, 4, 5


def _data(dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = (2.0 * torch.randn(T, B, C, generator=g, dtype=torch.float64)).to(dtype)
    target = torch.randint(0, C, (B,), generator=g)
    return out, target


def _tet_by_loop(out: torch.Tensor, target: torch.Tensor, lam: float, phi: float, eps: float) -> torch.Tensor:
    """The paper's equations written out element by element: L_TET = 1/T sum_t CE(O(t), y) with a label-smoothed
    CE = -sum_c q_c log p_c, q = (1 - eps) onehot + eps / C; L_MSE = 1/T sum_t 1/(B C) sum_{b,c} (O_bc(t) - phi)^2."""
    steps, batch, classes = out.shape
    ce_sum = torch.zeros((), dtype=out.dtype)
    mse_sum = torch.zeros((), dtype=out.dtype)
    for t in range(steps):
        ce_t = torch.zeros((), dtype=out.dtype)
        sq_t = torch.zeros((), dtype=out.dtype)
        for b in range(batch):
            z = out[t, b]
            log_p = z - torch.log(torch.exp(z - z.max()).sum()) - z.max()
            for c in range(classes):
                q = (1.0 - eps) * float(c == int(target[b])) + eps / classes
                ce_t = ce_t - q * log_p[c]
                sq_t = sq_t + (z[c] - phi) ** 2
        ce_sum = ce_sum + ce_t / batch
        mse_sum = mse_sum + sq_t / (batch * classes)
    return (1.0 - lam) * ce_sum / steps + lam * mse_sum / steps


@pytest.mark.parametrize("lam,phi,eps", [(0.3, 0.7, 0.0), (TET_LAMBDA, TET_TARGET, 0.1), (1.0, -0.5, 0.0)])
def test_tet_equals_the_per_step_loop(lam, phi, eps):
    out, target = _data()
    got = tet_loss(out, target, lam=lam, phi=phi, label_smoothing=eps)
    assert got.dtype == torch.float64  # float64 stays float64 (only bf16 / fp16 are promoted)
    torch.testing.assert_close(got, _tet_by_loop(out, target, lam, phi, eps), rtol=1e-12, atol=1e-12)
    # the engine's factory binds the same settings
    built = build_loss("tet", eps, tet_lambda=lam, tet_target=phi)
    torch.testing.assert_close(built(out, target), got, rtol=0, atol=0)


def test_lambda_zero_is_the_mean_per_step_cross_entropy():
    out, target = _data()
    per_step = torch.stack([F.cross_entropy(out[t], target) for t in range(T)]).mean()
    torch.testing.assert_close(tet_loss(out, target, lam=0.0), per_step, rtol=1e-12, atol=1e-12)
    # ... which is not the cross-entropy of the time-averaged output ("ce"): TET is a different objective
    assert not torch.isclose(per_step, build_loss("ce")(out, target))
    # a constant output cannot tell the two apart
    flat = out[:1].expand(T, B, C)
    torch.testing.assert_close(tet_loss(flat, target, lam=0.0), build_loss("ce")(flat, target))


def test_mse_term_pulls_every_output_towards_phi():
    out, target = _data()
    out.requires_grad_(True)
    phi, lam = 0.25, 0.2
    tet_loss(out, target, lam=1.0, phi=phi).backward()  # the MSE term alone
    assert out.grad is not None
    grad = out.grad.clone()
    # d/dO of mean((O - phi)^2) = 2 (O - phi) / (T B C): descent moves every output towards phi
    torch.testing.assert_close(grad, 2.0 * (out.detach() - phi) / (T * B * C), rtol=1e-12, atol=1e-15)
    assert torch.equal(torch.sign(grad), torch.sign(out.detach() - phi))
    stepped = out.detach() - 0.5 * grad
    assert torch.all((stepped - phi).abs() < (out.detach() - phi).abs())
    # in the mixed loss the MSE term adds exactly lam times that gradient to (1 - lam) times the CE's
    out.grad = None
    tet_loss(out, target, lam=lam, phi=phi).backward()
    mixed = out.grad.clone()
    out.grad = None
    tet_loss(out, target, lam=0.0).backward()
    torch.testing.assert_close(mixed, (1.0 - lam) * out.grad + lam * grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_output_gives_a_float32_loss(low):
    out32, target = _data(torch.float32, seed=1)
    ref = tet_loss(out32, target, lam=0.1)
    out = out32.to(low).requires_grad_(True)
    loss = tet_loss(out, target, lam=0.1)
    assert loss.dtype == torch.float32
    # exactly the float32 loss of the rounded values: the reductions run in float32
    assert torch.equal(loss, tet_loss(out.detach().float(), target, lam=0.1))
    # Tolerance: bf16 keeps 8 significant bits (relative rounding <= 2^-9 per entry, fp16 2^-12); the loss of the
    # rounded outputs is within 1 % (relative) of the float32 loss on these O(1) logits
    torch.testing.assert_close(loss, ref, rtol=1e-2, atol=0.0)
    loss.backward()
    assert out.grad is not None and out.grad.dtype == low  # the gradient flows back to the low-precision output


def test_autocast_output_gives_a_float32_loss():
    out32, target = _data(torch.float32, seed=2)
    layer = torch.nn.Linear(C, C).double().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(out32)  # bf16 under autocast
        assert logits.dtype == torch.bfloat16
        loss = build_loss("tet")(logits, target)
    assert loss.dtype == torch.float32
    with torch.no_grad():
        ref = build_loss("tet")(layer(out32), target)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-2, atol=0.0)


def test_non_temporal_output_is_refused():
    out, target = _data()
    with pytest.raises(ValueError, match=r"per-step output \[T, B, classes\], got shape \(4, 5\)"):
        tet_loss(out[0], target)
    with pytest.raises(ValueError, match="per-step output"):
        build_loss("tet")(out.mean(0), target)
    with pytest.raises(ValueError, match=r"target must have shape \[4\]"):
        tet_loss(out, target[:3])


def test_build_loss_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match=r"unknown loss 'focal'; choose one of \['ce', 'mse', 'tet'\]"):
        build_loss("focal")
    with pytest.raises(ValueError, match="tet_lambda applies to the 'tet' loss only"):
        build_loss("ce", tet_lambda=0.1)
    with pytest.raises(ValueError, match=r"lambda must be in \[0, 1\]"):
        build_loss("tet", tet_lambda=1.5)


# -- config ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss,expected",
    [
        ('name = "focal"', r"loss\.name = 'focal': Input should be 'ce', 'mse' or 'tet'"),
        ('name = "tet"\ntet_lambda = -0.1', r"loss\.tet_lambda = -0\.1: Input should be greater than or equal to 0"),
        ('name = "tet"\ntet_lambda = 1.5', r"loss\.tet_lambda = 1\.5: Input should be less than or equal to 1"),
        ('name = "tet"\ntet_target = nan', r"loss\.tet_target = nan: Input should be a finite number"),
        ('name = "tet"\ntet_target = "one"', r"loss\.tet_target = 'one': Input should be a valid number"),
        ('name = "tet"\ntet_gamma = 1.0', r"loss\.tet_gamma: unknown key"),
        ("tet_lambda = 0.05", r"loss\.tet_lambda = 0\.05: applies to loss\.name = 'tet' only, and loss\.name = 'ce'"),
        ('name = "mse"\ntet_target = 1.0', r"loss\.tet_target = 1\.0: applies to loss\.name = 'tet' only.*'mse'"),
    ],
)
def test_config_refuses_bad_tet_settings(loss, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config_text(f"[loss]\n{loss}\n")


def test_config_refuses_tet_with_distillation():
    toml = '[loss]\nname = "tet"\n[distill]\nsource = "online"\nteacher_model = "mlp"\n'
    with pytest.raises(ConfigError, match=r"loss\.name = 'tet' with a \[distill\] section"):
        load_config_text(toml)


def test_config_resolves_tet_defaults_and_old_configs_stay_equal():
    tet = load_config_text('[loss]\nname = "tet"\n')
    assert (tet.loss.tet_lambda, tet.loss.tet_target) == (TET_LAMBDA, TET_TARGET) == (1e-3, 1.0)
    assert load_config_text(tet.to_toml()) == tet  # a TET run's config.toml records the values it used
    assert "tet_lambda = 0.001" in tet.to_toml() and "tet_target = 1.0" in tet.to_toml()
    explicit = load_config_text('[loss]\nname = "tet"\ntet_lambda = 0.05\ntet_target = 0.5\n')
    assert (explicit.loss.tet_lambda, explicit.loss.tet_target) == (0.05, 0.5)
    assert config_differences(tet, explicit) == ["loss.tet_lambda: 0.001 != 0.05", "loss.tet_target: 1.0 != 0.5"]
    # a config written before the TET keys existed (resolved [loss] = name + label_smoothing) resolves as before
    ce = load_config_text(tiny_toml())
    old = load_config_text(tiny_toml() + '\n[loss]\nname = "ce"\nlabel_smoothing = 0.0\n')
    assert (ce.loss.tet_lambda, ce.loss.tet_target) == (None, None)
    assert config_differences(old, ce) == [] and old == ce
    assert "tet_" not in ce.to_toml()  # and a CE run's config.toml stays readable with name = "ce"
    assert load_config_text(ce.to_toml()) == ce


def test_config_keys_list_the_tet_keys():
    keys = {k.split(" ")[0]: k for k in config_keys()}
    assert "loss.tet_lambda" in keys and "loss.tet_target" in keys
    assert "unset = 0.001" in keys["loss.tet_lambda"] and "unset = 1.0" in keys["loss.tet_target"]


# -- end to end --------------------------------------------------------------------------------------------------------
def test_tiny_tet_run_trains_and_resumes(tmp_path):
    # the tiny dense MLP at a higher learning rate and 10 steps an epoch, so that 4 epochs learn (about 2 s)
    toml = (
        tiny_toml("dense")
        .replace("epochs = 3", "epochs = 4")
        .replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 10")
        .replace("lr = 0.003", "lr = 0.01")
    ) + '\n[loss]\nname = "tet"\n'
    trainer = Trainer(load_config_text(toml), tmp_path / "tet", quiet=True)
    trainer.fit()
    records = run_metrics(tmp_path / "tet")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    losses = [r["train_loss"] for r in records]
    assert all(math.isfinite(x) for x in losses)
    # TET's loss falls every epoch as the network learns the digits (measured: 2.09, 1.61, 1.38, 1.25)
    assert all(b < a for a, b in pairwise(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert records[-1]["train_acc"] > 0.5 and records[-1]["test_acc"] > 0.5  # 10 classes: chance is 0.1
    cfg_text = (tmp_path / "tet" / "config.toml").read_text()
    assert 'name = "tet"' in cfg_text and "tet_lambda = 0.001" in cfg_text
    # the run directory resumes: its checkpoint's config resolves to config.toml's
    resumed = Trainer.resume(tmp_path / "tet", quiet=True)
    assert resumed.state.epoch == 4 and resumed.config == trainer.config


def test_trainer_loss_uses_the_configured_tet_settings(tmp_path):
    toml = tiny_toml("dense") + '\n[loss]\nname = "tet"\ntet_lambda = 0.5\ntet_target = 0.25\nlabel_smoothing = 0.1\n'
    trainer = Trainer(load_config_text(toml), tmp_path / "r", quiet=True)
    out, target = _data(torch.float32)
    expected = tet_loss(out, target, lam=0.5, phi=0.25, label_smoothing=0.1)
    assert torch.equal(trainer.loss_fn(out, target), expected)
    assert not torch.isclose(expected, tet_loss(out, target))  # the defaults would give another value
