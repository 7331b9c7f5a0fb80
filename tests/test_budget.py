"""The density budget over parameters or over multiply-accumulates (``sparse.budget``, sparsesnn.sparse.budget)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.models import build_model
from sparsesnn.sparse.budget import layer_costs, weight_uses
from sparsesnn.sparse.masks import layer_densities
from sparsesnn.sparse.methods import METHODS
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import Trainer
from tests.conftest import run_metrics, tiny_toml

T = 4


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("convnet", channels=[8, 16], hidden=64, in_channels=1, num_classes=10, input_size=28)


def example() -> torch.Tensor:
    return torch.zeros(T, 1, 1, 28, 28)


def live_macs(learner) -> tuple[float, float]:
    rows = [r for r in learner.layer_table() if r["masked"]]
    return sum(r["live_macs"] for r in rows), sum(r["macs"] for r in rows)


def test_weight_uses_count_output_positions_per_sample_and_step():
    model = convnet()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    uses = weight_uses(model, example(), names)
    # conv 3x3 padding 1 keeps 28x28, a 2x2 pool halves it; every layer runs once per step, T steps
    assert [uses[n] for n in names] == [T * 28 * 28, T * 14 * 14, T, T]


def test_weight_uses_moves_no_state_and_refuses_a_layer_that_never_ran():
    model = convnet()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    model.train()
    x = torch.rand(T, 1, 1, 28, 28)
    rng = torch.get_rng_state()
    weight_uses(model, x, [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)])
    assert torch.equal(bn.running_mean, stats) and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    model.add_module("spare", nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"\['spare'\] did not run"):
        weight_uses(model, example(), ["spare"])


@pytest.mark.parametrize("distribution", ["er", "erk"])
def test_layer_densities_solve_the_budget_over_the_given_costs(distribution):
    weights = [torch.empty(64, 32, 3, 3), torch.empty(512, 3136), torch.empty(10, 512)]
    costs = [18432 * 196.0, 1605632.0, 5120.0]
    by_macs = layer_densities(weights, 0.1, distribution, costs)
    by_params = layer_densities(weights, 0.1, distribution)
    assert sum(d * c for d, c in zip(by_macs, costs, strict=True)) == pytest.approx(0.1 * sum(costs))
    assert sum(d * w.numel() for d, w in zip(by_params, weights, strict=True)) == pytest.approx(
        0.1 * sum(w.numel() for w in weights)
    )
    assert by_macs[0] < by_params[0]  # the conv does most of the MACs: the MAC budget thins it
    assert layer_densities(weights, 0.1, "uniform", costs) == [0.1] * 3


@pytest.mark.parametrize("method", ["static", "set", "rigl", "esl", "pqi", "gmp"])
def test_every_method_starts_or_ends_at_the_mac_budget(method):
    model = convnet()
    kw = dict(density=0.2, budget="macs", example_input=example(), total_steps=1000, steps_per_epoch=100)
    if method == "gmp":
        kw.update(start_at=0.0, end_at=0.5)
    learner = METHODS[method](model, None, **kw)
    if method == "gmp":
        targets = learner.targets
        live = sum(targets[r["layer"]] * r["macs"] for r in learner.layer_table() if r["masked"])
        assert live == pytest.approx(0.2 * live_macs(learner)[1])
    else:
        live, dense = live_macs(learner)
        assert live / dense == pytest.approx(0.2, abs=0.01)
        assert learner.metrics()["mac_density"] == pytest.approx(live / dense)
        assert learner.density() != pytest.approx(0.2, abs=0.01) or learner.distribution == "uniform"


def test_lth_global_prune_removes_its_share_of_macs():
    model = convnet()
    learner = METHODS["lth"](
        model, None, density=0.25, budget="macs", scope="global", rounds=3, example_input=example(),
        steps_per_epoch=1, total_epochs=3,
    )  # fmt: skip
    before = live_macs(learner)[0]
    learner._prune()
    after, _ = live_macs(learner)
    assert after / before == pytest.approx(1 - learner.prune_rate, abs=0.01)


def test_mac_budget_needs_an_example_and_reports_without_one():
    with pytest.raises(ValueError, match="example_input="):
        METHODS["esl"](convnet(), None, density=0.1, budget="macs", total_steps=1000)
    learner = METHODS["esl"](convnet(), None, density=0.1, total_steps=1000)
    assert "mac_density" not in learner.metrics() and "MAC" not in learner.summary()


def test_summary_shows_mac_density_per_layer():
    learner = METHODS["esl"](convnet(), None, density=0.1, budget="macs", total_steps=1000, example_input=example())
    text = learner.summary()
    assert "MAC density 0.1" in text and "live/dense MACs per sample" in text
    conv = next(r for r in learner.layer_table() if r["masked"])
    assert f"{round(conv['live_macs']):,}/{round(conv['macs']):,}" in text


def test_layer_costs_refuse_unknowns():
    with pytest.raises(ValueError, match="unknown budget"):
        layer_costs([1], [1.0], "flops")
    assert layer_costs([3, 4], [2.0, 5.0], "macs") == [6.0, 20.0]
    assert layer_costs([3, 4], None, "params") == [3.0, 4.0]


def test_a_run_with_the_mac_budget_logs_mac_densities(tmp_path):
    toml = tiny_toml("rigl", 0.2).replace("[sparse]\n", '[sparse]\nbudget = "macs"\n')
    Trainer(load_config_text(toml), tmp_path / "run", quiet=True).fit()
    rec = run_metrics(tmp_path / "run")[-1]
    assert rec["mac_density"] == pytest.approx(0.2, abs=0.01)
    assert set(rec["layer_macs"]) == {"layers.0.0", "layers.1.0"} or rec["layer_macs"]
