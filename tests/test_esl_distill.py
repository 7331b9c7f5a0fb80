"""ESL-SNN, the distillation losses and teachers, and EvoKD end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sparsesnn.core.errors import ConfigError
from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.sparse import METHODS
from sparsesnn.train.config import load_config_text
from sparsesnn.train.distill import Distiller, distillation_loss, kl_divergence
from sparsesnn.train.trainer import RunInterrupted, Trainer
from tests.conftest import tiny_toml


# ---------------------------------------------------------------------------------------------------------------------
# ESL
# ---------------------------------------------------------------------------------------------------------------------
def _net() -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        "convnet",
        in_channels=1,
        num_classes=4,
        input_size=8,
        channels=(4, 6),
        hidden=12,
        neuron=NeuronSpec(backend="eager"),
    )


def test_esl_defaults_er_first_last_dense_and_exact_density():
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    learner = METHODS["esl"](model, opt, density=0.2, total_steps=40, update_every=4, seed=1)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [layer.name for layer in learner.layers] == names[1:-1]  # first and last layer dense
    assert learner.distribution == "er"
    counts = [layer.active() for layer in learner.layers]
    g = torch.Generator().manual_seed(0)
    changed = []
    for step in range(1, 41):
        x = (torch.rand(2, 8, 1, 8, 8, generator=g) < 0.5).float()
        y = torch.randint(0, 4, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if learner.step():
            changed.append(step)
        assert [layer.active() for layer in learner.layers] == counts  # density held exactly across rewiring
    # every 4 steps, stopping at 75 % of 40 steps: updates at 4, 8, ..., 28 (30 is the end; 32 is past it)
    updates = [r["at"] for r in learner.history]
    assert updates == [4, 8, 12, 16, 20, 24, 28]
    assert set(changed) <= set(updates) and changed[:3] == [4, 8, 12]  # late updates may round to 0 synapses
    alphas = [r["alpha"] for r in learner.history]
    assert alphas == pytest.approx([0.15 * (1 + math.cos(math.pi * t / 30)) for t in updates])
    assert learner.history[0]["layers"][learner.layers[0].name]["dropped"] == math.floor(alphas[0] * counts[0])


# ---------------------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------------------
def _hand_kl(p_logits, q_logits, tau):
    total = 0.0
    for pr, qr in zip(p_logits.tolist(), q_logits.tolist(), strict=True):
        zp = sum(math.exp(v / tau) for v in pr)
        zq = sum(math.exp(v / tau) for v in qr)
        for a, b in zip(pr, qr, strict=True):
            p, q = math.exp(a / tau) / zp, math.exp(b / tau) / zq
            total += p * (math.log(p) - math.log(q))
    return total / len(p_logits)


def test_kd_losses_equal_hand_computed_values():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    tau, lam = 2.0, 0.3
    assert float(kl_divergence(t, s, tau)) == pytest.approx(_hand_kl(t, s, tau), rel=1e-12)
    ce = (
        -(
            math.log(math.exp(1) / (math.exp(1) + 1 + math.exp(-1)))
            + math.log(math.exp(2) / (math.exp(0.5) + math.exp(2) + 1))
        )
        / 2
    )
    fwd = distillation_loss(s, t, y, divergence="forward", temperature=tau, weight=lam)
    rev = distillation_loss(s, t, y, divergence="reverse", temperature=tau, weight=lam)
    assert float(fwd) == pytest.approx((1 - lam) * ce + lam * tau**2 * _hand_kl(t, s, tau), rel=1e-12)
    assert float(rev) == pytest.approx((1 - lam) * ce + lam * tau**2 * _hand_kl(s, t, tau), rel=1e-12)
    assert float(fwd) != pytest.approx(float(rev))
    with pytest.raises(ValueError, match="divergence"):
        distillation_loss(s, t, y, divergence="js")


def test_reverse_kl_gradient_reaches_only_the_student():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    distillation_loss(s, t, torch.tensor([0, 1, 2, 3])).backward()
    assert s.grad is not None and t.grad is None


# ---------------------------------------------------------------------------------------------------------------------
# teachers
# ---------------------------------------------------------------------------------------------------------------------
class CountingTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        return self.fc(x.flatten(1))


def make_ann_teacher() -> nn.Module:
    """Used through `teacher_factory = "tests.test_esl_distill:make_ann_teacher"`."""
    torch.manual_seed(7)
    return CountingTeacher()


def _evokd_toml(distill: str, epochs: int = 2, augment: bool = False) -> str:
    toml = tiny_toml(method="evokd", density=0.3, params="{ update_every = 2 }").replace(
        "epochs = 3", f"epochs = {epochs}"
    )
    toml = toml.replace('method = "evokd"', 'method = "evokd"\ndense_first = false')  # a 2-layer MLP
    if augment:
        toml = toml.replace("time_steps = 2", 'time_steps = 2\nencoder = "poisson"')
    return toml + "\n[distill]\n" + distill


@pytest.mark.parametrize("augment", [False, True])
def test_frozen_teacher_called_once_per_sample_per_epoch(tmp_path, augment):
    weights = tmp_path / "ann.pt"
    torch.save(make_ann_teacher().state_dict(), weights)
    toml = _evokd_toml(
        'source = "module"\nteacher_factory = "tests.test_esl_distill:make_ann_teacher"\n'
        f'teacher_weights = "{weights}"',
        epochs=3,
        augment=augment,
    )
    trainer = Trainer(load_config_text(toml), tmp_path / "run", quiet=True)
    trainer.fit()
    from sparsesnn.train.trainer import epoch_order

    per_epoch = [set(epoch_order(len(trainer.data.train), 3, e, True)[:192].tolist()) for e in range(3)]
    teacher = trainer.distiller.teacher
    # deterministic inputs: logits cached, the teacher sees each distinct sample once in the whole run; random
    # (Poisson-encoded) inputs: the cache is per epoch and the teacher sees each sample once per epoch
    expected = 3 * 192 if augment else len(set().union(*per_epoch))
    assert expected < 3 * 192 or augment
    assert teacher.samples == trainer.distiller.teacher_calls == expected


def test_evokd_from_a_dense_run_teacher_and_resume(tmp_path):
    Trainer(load_config_text(tiny_toml(method="dense")), tmp_path / "teacher", quiet=True).fit()
    toml = _evokd_toml(f'source = "run"\nteacher_run = "{tmp_path / "teacher"}"\ndivergence = "reverse"')
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    full.fit()
    assert full.learner.name == "evokd" and full.learner.history  # ESL rewiring ran under the KD objective
    cut = Trainer(load_config_text(toml), tmp_path / "cut", quiet=True)
    original_step = cut.learner.step

    def step_then_stop() -> bool:
        changed = original_step()
        if cut.learner.steps == 8:  # epoch 2, batch 2: as if Ctrl-C was pressed
            cut.request_stop()
        return changed

    cut.learner.step = step_then_stop  # type: ignore[method-assign]
    with pytest.raises(RunInterrupted):
        cut.fit()
    resumed = Trainer.resume(tmp_path / "cut", quiet=True)
    resumed.fit()

    def metrics(rd):
        return [
            {k: v for k, v in json.loads(x).items() if k not in ("time_s", "samples_per_s")}
            for x in (rd / "metrics.jsonl").read_text().splitlines()
        ]

    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")


@pytest.mark.parametrize("divergence", ["forward", "reversed_roles"])
def test_online_teacher_learns_beside_the_student(tmp_path, divergence):
    toml = _evokd_toml(
        f'source = "online"\nteacher_model = "mlp"\nteacher_params = {{ hidden = [48] }}\ndivergence = "{divergence}"'
    )
    trainer = Trainer(load_config_text(toml), tmp_path / "run", quiet=True)
    before = [p.clone() for p in trainer.distiller.teacher.parameters()]
    trainer.fit()
    after = list(trainer.distiller.teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_distill_config_errors():
    with pytest.raises(ConfigError, match=r"'evokd' learns from a teacher: add a \[distill\] section"):
        load_config_text(tiny_toml(method="evokd"))
    with pytest.raises(ConfigError, match=r"needs distill\.teacher_run"):
        load_config_text(_evokd_toml('source = "run"'))
    with pytest.raises(ConfigError, match=r"reversed_roles' needs distill\.source = 'online'"):
        load_config_text(_evokd_toml('source = "run"\nteacher_run = "x"\ndivergence = "reversed_roles"'))
    with pytest.raises(ValueError, match="needs a teacher trained online"):
        Distiller(nn.Linear(2, 2), lambda r, s: r, divergence="reversed_roles")
