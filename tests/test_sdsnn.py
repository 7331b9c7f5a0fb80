"""SD-SNN: each mechanism on hand-set weights does what ../shared/METHODS.md section 3 says; ghosts learn during an
epoch and vanish at its end; the state survives checkpoints; pruned neurons compact away."""

from __future__ import annotations

import io
import math
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.sparse import METHODS
from sparsesnn.sparse.methods.sdsnn import SDSNN, percentile
from sparsesnn.sparse.shrink import compact
from sparsesnn.train.config import load_config, load_config_text
from sparsesnn.train.trainer import RunInterrupted, Trainer
from tests.conftest import run_metrics, tiny_sdsnn_toml

EAGER = NeuronSpec(backend="eager")
REPO = Path(__file__).resolve().parents[1]
# these unit tests call epoch ends directly, without the optimiser steps of a loop
pytestmark = pytest.mark.filterwarnings("ignore:.*no learner.step\\(\\) since the previous epoch end")

# mechanisms off unless a test turns them on: each test looks at one thing
QUIET = dict(constraint=False, neuron_pruning=False, regeneration=False, range_layers="none")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets: one intra-op thread is faster than two that fight the machine's other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fc_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 10), nn.Linear(10, 6), nn.Linear(6, 3))


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 3), nn.Flatten(), nn.Linear(5, 3))


def spiking_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("convnet", in_channels=1, num_classes=4, input_size=8, channels=(4, 6), hidden=10, neuron=EAGER)


def make(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kw) -> SDSNN:
    kw = {**QUIET, **kw}
    kw.setdefault("N", 1)
    if "total_epochs" not in kw:  # a long run: the epochs a test visits are never the last one
        kw.setdefault("total_steps", 1000)
    kw.setdefault("steps_per_epoch", 10)
    return METHODS["sdsnn"](model, optimizer, **kw)


def weight(learner: SDSNN, i: int = 0) -> torch.Tensor:
    return learner.layers[i].weight


def set_(t: torch.Tensor, index, value) -> None:
    with torch.no_grad():
        t[index] = value


def epochs(learner: SDSNN, start: int, stop: int) -> None:
    for e in range(start, stop):
        learner.on_epoch_end(e)


# -- 1. ranges and the constraint --------------------------------------------------------------------------------------
def test_ranges_start_at_the_layer_max():
    learner = make(fc_net(), range_layers="all")
    learner.on_epoch_end(0)
    for layer in learner.layers:
        top = layer.weight.max()
        assert torch.all(learner.ranges[layer.name]["pos"] == top)
        assert torch.all(learner.ranges[layer.name]["neg"] == -top)


def test_range_grows_after_n_epochs_running_beyond_it():
    learner = make(fc_net(), N=2, range_layers="all")
    w, name = weight(learner), learner.layers[0].name
    learner.on_epoch_end(0)
    r0 = float(learner.ranges[name]["pos"][0, 0])
    pos, neg = learner.ranges[name]["pos"], learner.ranges[name]["neg"]
    # (0,0) above r+ at epochs 1, 2, 3; (1,1) below r- likewise; (2,2) above at 1 and 3 but not at 2
    for e, excess in ((1, 0.1), (2, 0.2), (3, 0.3)):
        set_(w, (0, 0), r0 + excess)
        set_(w, (1, 1), -r0 - excess)
        set_(w, (2, 2), r0 + excess if e != 2 else 0.0)
        learner.on_epoch_end(e)
        pos, neg = learner.ranges[name]["pos"], learner.ranges[name]["neg"]
        if e < 3:  # epoch 1 only starts the run (n+ = 0), epoch 2 counts n+ = 1 < N
            assert pos[0, 0] == pytest.approx(r0) and neg[1, 1] == pytest.approx(-r0)
            assert int(learner.dynamics[name]["n_pos"][0, 0]) == e - 1
    # n+ = 2 = N at epoch 3: r+ += s+ / N with s+ the excesses of epochs 2 and 3
    assert float(pos[0, 0]) == pytest.approx(r0 + (0.2 + 0.3) / 2, abs=1e-6)
    assert float(neg[1, 1]) == pytest.approx(-r0 - (0.2 + 0.3) / 2, abs=1e-6)
    assert int(learner.dynamics[name]["n_pos"][0, 0]) == 0  # counters restart
    assert float(pos[2, 2]) == pytest.approx(r0)  # the run was broken at epoch 2
    untouched = torch.ones_like(pos, dtype=torch.bool)
    untouched[0, 0] = untouched[1, 1] = False
    assert torch.all(pos[untouched] == r0) and torch.all(neg[untouched] == -r0)


def test_range_shrinks_by_three_quarters_after_n_epochs_of_shrinking_weight():
    learner = make(fc_net(), N=2, range_layers="all")
    w, name = weight(learner), learner.layers[0].name
    w0 = float(w.detach()[0, 0])
    learner.on_epoch_end(0)
    r0 = float(learner.ranges[name]["pos"][0, 0])
    for e, scale in ((1, 0.9), (2, 0.8), (3, 0.7)):
        set_(w, (0, 0), w0 * scale)
        learner.on_epoch_end(e)
        if e < 3:
            assert float(learner.ranges[name]["pos"][0, 0]) == pytest.approx(r0)
    assert float(learner.ranges[name]["pos"][0, 0]) == pytest.approx(0.75 * r0)
    assert float(learner.ranges[name]["neg"][0, 0]) == pytest.approx(-0.75 * r0)
    assert int((learner.ranges[name]["pos"] != r0).sum()) == 1
    assert learner.history[-1]["ranges_shrunk"] == 1


@pytest.mark.parametrize("constraint", [True, False])
def test_constraint_clips_into_the_range_only_after_epoch_n(constraint):
    learner = make(fc_net(), N=2, constraint=constraint)
    w = weight(learner)
    learner.on_epoch_end(0)
    r0 = float(learner.ranges[learner.layers[0].name]["pos"][0, 0])
    for e in (1, 2, 3):
        set_(w, (0, 0), r0 + 1.0)
        set_(w, (0, 1), -r0 - 2.0)
        learner.on_epoch_end(e)
        clipped = constraint and e > 2
        assert float(w.detach()[0, 0]) == pytest.approx(r0 if clipped else r0 + 1.0)
        assert float(w.detach()[0, 1]) == pytest.approx(-r0 if clipped else -r0 - 2.0)
    assert ("clipped" in learner.history[-1]) == constraint


@pytest.mark.parametrize("mode", ["all", "last", "none"])
def test_range_layers_selects_whose_ranges_move(mode):
    learner = make(fc_net(), range_layers=mode)
    learner.on_epoch_end(0)
    start = {n: r["pos"].clone() for n, r in learner.ranges.items()}
    for e in (1, 2, 3):
        for layer in learner.layers:
            with torch.no_grad():
                layer.weight.mul_(1.5)  # everything beyond its range, every epoch
        learner.on_epoch_end(e)
    moved = {n for n in start if not torch.equal(start[n], learner.ranges[n]["pos"])}
    assert moved == {"all": {"0", "1"}, "last": {"1"}, "none": set()}[mode]
    assert set(learner.dynamics) == moved


# -- 2. neuronal pruning -----------------------------------------------------------------------------------------------
def _set_widths(learner: SDSNN, name: str, factors: list[float]) -> None:
    r = learner.ranges[name]
    f = torch.tensor(factors).view(-1, *([1] * (r["pos"].dim() - 1)))
    r["pos"].copy_(f * r["pos"].abs())
    r["neg"].copy_(-r["pos"])


def test_neuron_pruning_removes_the_lowest_scoring_fraction():
    model = fc_net()
    learner = make(model, neuron_pruning=True, rho_init=0.3, last_rho_init=0.0)
    learner.on_epoch_end(0)
    _set_widths(learner, "0", [0.9, 0.2, 0.5, 0.1, 1.0, 0.3, 0.8, 0.7, 0.6, 0.4])
    epochs(learner, 1, 3)  # e <= 2N: nothing pruned yet
    assert bool(learner.alive["0"].all())
    assert learner.on_epoch_end(3)  # floor(10 * 0.3) = 3 lowest: widths 0.1, 0.2, 0.3
    layer = learner.layers[0]
    assert torch.nonzero(~learner.alive["0"]).flatten().tolist() == [1, 3, 5]
    assert torch.equal(layer.neuron_mask, learner.alive["0"])
    assert torch.all(layer.weight[[1, 3, 5]] == 0) and torch.all(layer.module.bias[[1, 3, 5]] == 0)
    assert not layer.mask[[1, 3, 5]].any() and layer.mask[learner.alive["0"]].all()
    assert learner.density() == pytest.approx((80 - 24 + 60) / 140)


def test_neuron_score_is_the_normalised_range_width_over_live_fan_in():
    learner = make(fc_net())
    learner.on_epoch_end(0)
    _set_widths(learner, "0", [1.0] * 5 + [0.5] * 5)
    learner.structure["0"][0, :4] = False
    scores = learner.neuron_scores("0")
    assert scores.tolist() == [4.0] + [8.0] * 4 + [0.0] * 5


def _expected_rates(n: list[int], rho: list[float], epochs_: range, rule: str, tail: int):
    """Replay the rate formula on the FC net: layer 0 (10) -> layer 1 (6) -> readout (3)."""
    pruned, history = [0, 0], []
    for e in epochs_:
        k = e - 3  # e - 2N - 1 with N = 1
        alive_next_0 = n[1] - pruned[1]  # read before layer 1 is pruned in this epoch
        pruned[0] = min(math.floor(n[0] * rho[0] + 1e-9), n[0] - 1)
        rho[0] += math.exp(-k / 5) * (n[0] - pruned[0]) / alive_next_0 / 100
        pruned[1] = min(math.floor(n[1] * rho[1] + 1e-9), n[1] - 1)
        if rule == "code":
            factor = 0.5 * math.exp(-k) if e <= tail else 0.0005
        else:
            factor = math.exp(-k / 5)
        rho[1] += factor * (n[1] - pruned[1]) / 3 / 100
        history.append((list(pruned), list(rho)))
    return history


@pytest.mark.parametrize("rule", ["code", "formula"])
def test_pruning_rate_follows_the_neurotrophic_formula(rule):
    learner = make(
        fc_net(), neuron_pruning=True, rho_init=0.25, last_rho_init=0.3, last_rate_rule=rule, last_tail_increment=5e-4
    )
    assert learner.rho == {"0": 0.25, "1": 0.3 if rule == "code" else 0.25}
    assert learner.last_tail_epoch == 3  # round(60 * N / 18)
    expected = _expected_rates([10, 6], [learner.rho["0"], learner.rho["1"]], range(3, 12), rule, 3)
    epochs(learner, 0, 3)
    for e, (pruned, rho) in zip(range(3, 12), expected, strict=True):
        learner.on_epoch_end(e)
        assert [int((~learner.alive[n]).sum()) for n in ("0", "1")] == pruned, e
        assert [learner.rho["0"], learner.rho["1"]] == pytest.approx(rho, rel=1e-12), e
    assert learner.metrics()["rho"] == pytest.approx({"0": expected[-1][1][0], "1": expected[-1][1][1]})


def test_late_rate_of_the_last_layer_spreads_the_codes_total_over_the_run():
    # the code (final_change): 0.0005 per epoch after epoch 60; the increments of epochs 61-598 reach a pruning step
    code = make(fc_net(), N=18, total_epochs=600, final_change=True)
    assert code.last_tail_increment == pytest.approx(0.0005)
    # by default epoch 599 does not prune, so the same total is spread over the 537 increments of epochs 61-597
    assert make(fc_net(), N=18, total_epochs=600).last_tail_increment == pytest.approx(0.0005 * 538 / 537)
    with pytest.raises(ValueError, match="total_epochs and steps_per_epoch are unknown"):  # no run length: refused
        METHODS["sdsnn"](fc_net(), N=18)
    assert make(fc_net(), N=2, total_epochs=15, last_tail_increment=0.0005).last_tail_increment == 0.0005
    assert make(fc_net(), N=1, total_epochs=5).last_tail_increment == 0.0  # epoch 3 is the last pruning: no tail
    with pytest.raises(ValueError, match="last_tail_increment"):
        make(fc_net(), last_tail_increment=-0.1)
    # a 15-epoch run with N = 2: tail after epoch 7, the last pruning at 13 (0-based), and the increments of epochs
    # 8-12 add up to the code's 538 (with final_change, the last pruning at 14 and those of 8-13)
    for final_change, stop in ((False, 13), (True, 14)):
        learner = make(
            fc_net(), N=2, total_epochs=15, neuron_pruning=True, last_rho_init=0.0, final_change=final_change
        )
        assert learner.last_tail_epoch == 7
        assert learner.develops(stop - 1) and learner.develops(stop) and not learner.develops(stop + 1)
        used = sum(learner.rate_increment("1", e, 6, 3) for e in range(8, stop))
        assert used == pytest.approx(0.0005 * 538 * 2 / 100)
        assert learner.rate_increment("1", 7, 6, 3) == pytest.approx(0.5 * math.exp(-2) * 2 / 100)
    # with stop_at = 0.8 the last pruning is at epoch 10 (11 < floor(12)): the total is spread over epochs 8-9
    stopped = make(fc_net(), N=2, total_epochs=15, neuron_pruning=True, last_rho_init=0.0, stop_at=0.8)
    assert stopped.develops(10) and not stopped.develops(11)
    used = sum(stopped.rate_increment("1", e, 6, 3) for e in range(8, 10))
    assert used == pytest.approx(0.0005 * 538 * 2 / 100)


def test_regeneration_percentile_reaches_its_cap_in_the_same_n_units_as_the_code():
    code = make(fc_net(), N=18)
    assert code.percentile_growth == pytest.approx(1.1)
    short = make(fc_net(), N=2)
    assert short.percentile_growth == pytest.approx(1.1**9)
    # epoch 2N + 1 + k * N / 18 of the short run has the percentile of epoch 2N + 1 + k of the code's
    for k in (0, 9, 18, 36):
        expected = code.regeneration_percentile("0", 37 + k)
        assert short.regeneration_percentile("0", 5 + k // 9) == pytest.approx(expected)
    schedule = [round(short.regeneration_percentile("0", e), 1) for e in range(5, 11)]
    assert schedule == [61.0, 62.4, 65.6, 73.1, 90.9, 99.0]
    assert make(fc_net(), N=2, percentile_growth=1.1).regeneration_percentile("0", 14) == pytest.approx(60 + 1.1**9)


def test_dead_neuron_thresholds_scale_with_fan_in():
    learner = make(fc_net())
    meta = torch.device("meta")
    assert learner.dead_threshold(nn.Conv2d(256, 256, 3, device=meta)) == pytest.approx(20)
    assert learner.dead_threshold(nn.Conv2d(512, 512, 3, device=meta)) == pytest.approx(40)
    assert learner.dead_threshold(nn.Linear(512 * 8 * 8, 512, device=meta)) == pytest.approx(50)


@pytest.mark.parametrize("prune_dead", [False, True])
def test_neurons_with_too_few_inputs_count_as_dead(prune_dead):
    learner = make(conv_net(), neuron_pruning=True, rho_init=0.0, dead_conv_ratio=0.5, prune_dead=prune_dead)
    name = learner.layers[0].name  # conv 2 -> 4, fan-in 18: threshold 9
    learner.structure[name][0].view(-1)[5:] = False  # neuron 0 keeps 5 inputs: dead
    learner.structure[name][1].view(-1)[12:] = False  # neuron 1 keeps 12: alive
    learner.on_epoch_end(0)
    assert learner.alive_count(name) == 3
    epochs(learner, 1, 4)
    # rho = 0 + exp(0) * alive / alive_next / 100, the next conv's 5 neurons all alive (threshold 0.5 * 36)
    assert learner.rho[name] == pytest.approx(3 / 5 / 100)
    assert bool(learner.alive[name][0]) is not prune_dead
    assert learner.alive[name][1:].all()


# -- 3. regeneration ---------------------------------------------------------------------------------------------------
def test_pruned_synapse_regrows_after_n_epochs_above_the_percentile():
    learner = make(
        fc_net(), neuron_pruning=True, regeneration=True, rho_init=0.1, last_rho_init=0.0, percentile_growth=1.1
    )
    layer = learner.layers[0]
    epochs(learner, 0, 4)  # epoch 3: neuron 0 pruned (all scores equal: the lowest index)
    assert torch.nonzero(~learner.alive["0"]).flatten().tolist() == [0]
    # its re-learned synapses: (0,2) stays above the percentile, (0,3) drops out once
    for e, dip in ((4, 1.0), (5, 1.0), (6, 0.0)):
        set_(layer.weight, (0, 2), 5.0)
        set_(layer.weight, (0, 3), 4.0 * dip)
        assert learner.regeneration_percentile("0", e) == pytest.approx(60 + 1.1 ** (e - 3))
        learner.on_epoch_end(e)
        # a candidate at this check and the previous one counts; it regrows when the count exceeds N = 1
        assert bool(layer.mask[0, 2]) is (e == 6), e
        assert int(learner.regrowth["0"]["count"][0, 2]) == {4: 0, 5: 1, 6: 0}[e]
    assert float(layer.weight.detach()[0, 2]) == 5.0  # the re-learned value is kept
    assert not layer.mask[0, 3] and float(layer.weight.detach()[0, 3]) == 0.0
    assert int(layer.mask[0].sum()) == 1 and bool(learner.alive["0"][0]) and bool(layer.neuron_mask[0])
    assert learner.history[-1]["regrown"] == {"0": 1, "1": 0}


def test_pruned_kernel_regrows_whole_and_revives_its_neuron_with_its_norm():
    model = conv_net()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    gamma0 = float(model[1].weight.detach()[0])
    learner = make(model, neuron_pruning=True, regeneration=True, rho_init=0.25, percentile_growth=1.1)
    layer = learner.layers[0]  # conv 2 -> 4, followed by the BatchNorm
    epochs(learner, 0, 4)
    assert torch.nonzero(~learner.alive[layer.name]).flatten().tolist() == [0]
    assert float(model[1].weight.detach()[0]) == 0.0 and float(model[1].bias.detach()[0]) == 0.0
    for e in (4, 5, 6):
        set_(layer.weight, (0, 1), 0.5)  # kernel (0, 1): sum 4.5, above the 65+ percentile of kernel sums
        learner.on_epoch_end(e)
        assert bool(layer.mask[0, 1].any()) is (e == 6)
    assert layer.mask[0, 1].all() and not layer.mask[0, 0].any()
    assert torch.all(layer.weight[0, 1] == 0.5)
    assert bool(layer.neuron_mask[0]) and float(model[1].weight.detach()[0]) == gamma0  # BN back from the stash


# -- ghosts: masked weights learn during the epoch, are re-zeroed at its end -------------------------------------------
def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(2, 8, 1, 8, 8, generator=g) * 2, torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def _train(model, opt, learner, data, stop: int | None = None, first_epoch: int = 0, steps_per_epoch: int = 2):
    for i, (x, y) in enumerate(data[:stop]):
        loss = nn.functional.cross_entropy(model(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        learner.step()
        if (i + 1) % steps_per_epoch == 0:
            learner.on_epoch_end(first_epoch + (i + 1) // steps_per_epoch - 1)


def _spiking_learner(seed: int = 0, **kw):
    model = spiking_net(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    kw = {"constraint": True, "neuron_pruning": True, "regeneration": True, "range_layers": "all",
          "rho_init": 0.3, "last_rho_init": 0.3, **kw}  # fmt: skip
    return model, opt, make(model, opt, **kw)


def test_ghost_synapses_learn_during_the_epoch_and_vanish_at_its_end():
    model, opt, learner = _spiking_learner()
    data = _batches(12)
    _train(model, opt, learner, data, stop=8)  # epochs 0-3; epoch 3 prunes
    conv = learner.layers[0]
    dead = ~learner.alive[conv.name]
    assert dead.any() and not learner.ghost
    assert torch.all(conv.weight[dead] == 0) and torch.all(conv.norm.weight[dead] == 0)
    structural = learner.density()
    assert learner.masks.density() == pytest.approx(structural)
    _train(model, opt, learner, data[8:], stop=1)  # first step of epoch 4 arms the ghosts
    assert learner.ghost and conv.neuron_mask.all() and conv.mask[dead].all()
    assert torch.all(conv.norm.weight[dead] != 0)  # BN back from the stash
    assert learner.masks.density() > structural and learner.density() == pytest.approx(structural)
    _train(model, opt, learner, data[9:], stop=1)
    assert torch.any(conv.weight[dead] != 0)  # pruned synapses re-learn
    learner.on_epoch_end(4)
    assert not learner.ghost and torch.equal(conv.mask, learner.structure[conv.name])
    for layer in learner.layers:
        absent = ~layer.mask
        assert torch.all(layer.weight[absent] == 0)
        for value in opt.state[layer.weight].values():
            if value.shape == absent.shape:
                assert torch.all(value[absent] == 0)
    assert torch.all(conv.norm.weight[dead] == 0) and torch.all(conv.norm.bias[dead] == 0)
    assert learner.masks.density() == pytest.approx(learner.density())


def test_no_ghosts_without_regeneration():
    model, opt, learner = _spiking_learner(regeneration=False)
    _train(model, opt, learner, _batches(10), stop=10)
    assert not learner.ghost and "regrown" not in learner.history[-1]
    assert learner.masks.density() == pytest.approx(learner.density())
    assert learner.density() < 1.0


def test_switching_neuron_pruning_off_leaves_the_other_mechanisms():
    model, opt, learner = _spiking_learner(neuron_pruning=False)
    _train(model, opt, learner, _batches(10), stop=10)
    assert all(bool(a.all()) for a in learner.alive.values()) and learner.density() == 1.0
    assert learner.rho == {n: 0.3 for n in learner.neuron_layers}
    assert "pruned" not in learner.history[-1] and "regrown" in learner.history[-1]
    assert "clipped" in learner.history[-1] and learner.history[-1]["ranges_shrunk"] >= 0


def test_stop_at_freezes_the_structure_for_the_last_epochs():
    data = _batches(16)  # 8 epochs of 2 steps
    model, opt, learner = _spiking_learner(stop_at=0.75, total_epochs=8)
    _, _, free = _spiking_learner(total_epochs=8)  # every epoch end from 2N + 1 on but the last
    _, _, code = _spiking_learner(total_epochs=8, final_change=True)  # the paper's code: the last one too
    assert [e for e in range(8) if learner.develops(e)] == [3, 4]  # e > 2N and e + 1 < floor(0.75 * 8) = 6
    assert [e for e in range(8) if free.develops(e)] == [3, 4, 5, 6]
    assert [e for e in range(8) if code.develops(e)] == [3, 4, 5, 6, 7]
    densities, ghosts = [], []
    for e in range(8):
        _train(model, opt, learner, data[2 * e : 2 * e + 2], first_epoch=e, stop=1)
        ghosts.append(learner.ghost)
        _train(model, opt, learner, data[2 * e + 1 : 2 * e + 2], first_epoch=e, steps_per_epoch=1)
        densities.append(learner.density())
    assert ghosts == [False, False, False, True, True, False, False, False]  # no ghost learns in the frozen epochs
    assert densities[4] < 1.0 and densities[4:] == [densities[4]] * 4
    structural = [r for r in learner.history if "pruned" in r or "regrown" in r]
    assert [r["epoch"] for r in structural] == [4, 5]
    assert all("clipped" in r for r in learner.history[2:])  # the constraint goes on after the stop
    with pytest.raises(ValueError, match="stop_at"):
        make(fc_net(), stop_at=1.5)
    with pytest.raises(ValueError, match="final_change"):
        make(fc_net(), stop_at=0.9, final_change=True)


# -- state -------------------------------------------------------------------------------------------------------------
def test_state_round_trip_mid_ghost_epoch_continues_identically():
    model, opt, learner = _spiking_learner()
    data = _batches(16)
    _train(model, opt, learner, data, stop=9)  # inside epoch 4, ghosts armed
    assert learner.ghost
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "learner": learner.state_dict()}, buf)
    _train(model, opt, learner, data[9:], stop=1)
    learner.on_epoch_end(4)
    _train(model, opt, learner, data[10:], first_epoch=5)  # epochs 5-7

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2, opt2, learner2 = _spiking_learner(seed=7)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    learner2.load_state_dict(saved["learner"])
    assert learner2.ghost
    _train(model2, opt2, learner2, data[9:], stop=1)
    learner2.on_epoch_end(4)
    _train(model2, opt2, learner2, data[10:], first_epoch=5)
    for (k, v1), v2 in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    s1, s2 = learner.extra_state(), learner2.extra_state()
    assert s1["history"] == s2["history"] and s1["rho"] == s2["rho"]
    for key in ("structure", "alive", "ever_pruned"):
        assert all(torch.equal(s1[key][n], s2[key][n]) for n in s1[key])
    for key in ("ranges", "dynamics", "regrowth", "stash"):
        for n in s1[key]:
            assert all(torch.equal(s1[key][n][k], s2[key][n][k]) for k in s1[key][n]), (key, n)


def test_engine_run_resumed_mid_ghost_epoch_writes_the_same_metrics(tmp_path):
    toml = tiny_sdsnn_toml()
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    full.fit()
    trainer = Trainer(load_config_text(toml), tmp_path / "cut", quiet=True)
    steps = {"n": 0}
    original_step = trainer.learner.step

    def step_and_maybe_interrupt():
        steps["n"] += 1
        if steps["n"] == 26:  # epoch 5 (index 4), batch 2: ghosts armed
            os.kill(os.getpid(), signal.SIGINT)
        return original_step()

    trainer.learner.step = step_and_maybe_interrupt  # type: ignore[method-assign]
    with pytest.raises(RunInterrupted):
        trainer.fit()
    resumed = Trainer.resume(tmp_path / "cut", quiet=True)
    assert (resumed.state.epoch, resumed.state.batch) == (4, 2) and resumed.learner.ghost
    resumed.fit()
    records = run_metrics(tmp_path / "full")
    assert run_metrics(tmp_path / "cut") == records
    assert [sum(r["neurons_pruned"].values()) for r in records] == [0, 0, 0, 3, 3, 3]  # floor(32 * 0.1) at epoch 4
    assert records[-1]["density"] < 1.0
    for (k, v1), v2 in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k


def test_pruned_neurons_compact_away_with_equal_outputs():
    model, opt, learner = _spiking_learner(regeneration=False)
    _train(model, opt, learner, _batches(10), stop=10)
    pruned = {n: int((~a).sum()) for n, a in learner.alive.items()}
    assert all(pruned[n] > 0 for n in learner.neuron_layers)
    x = (torch.rand(3, 5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    model.eval()
    with torch.no_grad():
        expected = model(x)
    small, report = compact(learner.finalize(), x)
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected, atol=1e-6, rtol=0)
    assert {n: a - b for n, (a, b) in report.removed.items()} == {n: pruned[n] for n in learner.neuron_layers}
    assert report.params_after < report.params_before


# -- odds and ends -----------------------------------------------------------------------------------------------------
def test_percentile_matches_numpy():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000):
        values = torch.randn(n, generator=g)
        for q in (0.0, 37.5, 60.0, 65.0 + 1.1**3, 99.0, 100.0):
            assert float(percentile(values, q)) == pytest.approx(np.percentile(values.numpy(), q), abs=1e-6)


def test_bad_settings_and_short_runs():
    with pytest.raises(ValueError, match=r"sdsnn: N = 0: Input should be greater than or equal to 1"):
        make(fc_net(), N=0)
    with pytest.raises(ValueError, match="range_layers"):
        make(fc_net(), range_layers="some")
    with pytest.raises(ValueError, match="nothing would ever run"):
        make(fc_net(), N=18, neuron_pruning=True, total_epochs=30)
    with pytest.warns(UserWarning, match="lower N"):  # the constraint runs (from epoch 20), pruning never does
        make(fc_net(), N=18, neuron_pruning=True, constraint=True, total_epochs=30)
    # the first pruning ends epoch 2N + 2 (1-based); by default an epoch must train after it
    with pytest.warns(UserWarning, match="need a run of 5 epochs"):
        make(fc_net(), N=1, neuron_pruning=True, constraint=True, total_epochs=4)
    with pytest.raises(ValueError, match="nothing would ever run"):
        make(fc_net(), N=1, neuron_pruning=True, total_epochs=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(fc_net(), N=1, neuron_pruning=True, total_epochs=4, final_change=True)  # it prunes at the end of 4


def test_recipes_name_only_settings_of_the_learner():
    allowed = set(METHODS["sdsnn"].Settings.model_fields)
    recipes = sorted((REPO / "configs").glob("sdsnn_*.toml"))
    assert {p.stem for p in recipes} == {"sdsnn_mnist", "sdsnn_nmnist", "sdsnn_dvs_gesture", "sdsnn_cifar10"}
    for path in recipes:
        cfg = load_config(path)
        assert cfg.sparse.method == "sdsnn", path
        # MNIST and N-MNIST train as those datasets' other method rows; the paper's recipes keep its MSE loss
        assert cfg.loss.name == ("ce" if "mnist" in path.stem else "mse"), path
        assert set(cfg.sparse.params) <= allowed, path
        n = cfg.sparse.params["N"]
        assert 2 * n + 3 <= cfg.run.epochs, path  # a pruning at the end of epoch 2N + 2, then a trained epoch
