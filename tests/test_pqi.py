"""The PQ index (Diao et al., ICLR 2023), its retained-weight bound and the two-stage ``pqi`` learner."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch

from sparsesnn.sparse.methods.pqi import pick_per_row
from sparsesnn.sparse.pqindex import pq_bound, pq_index, prune_counts, rewire_ratio, unit_rows, unit_stats
from sparsesnn.train.config import load_config_text
from sparsesnn.train.trainer import RunInterrupted, Trainer
from tests.conftest import run_metrics, tiny_toml
from tests.test_sparse_learners import batches, check_invariants, make, tiny_net, train_step


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- the index -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "w,p,q,expected",
    [
        # d^(1/q-1/p) ||w||_p / ||w||_q worked by hand
        ((1.0, 4.0), 0.5, 1.0, 1 - (1 + 2) ** 2 / (2 * 5)),  # = 0.1
        ((1.0, 4.0), 1.0, 2.0, 1 - 5 / (math.sqrt(2) * math.sqrt(17))),
        ((3.0, 0.0, 4.0), 1.0, 2.0, 1 - 7 / (math.sqrt(3) * 5)),
        ((1.0, -1.0, 4.0, -4.0), 0.5, 2.0, 1 - (1 + 1 + 2 + 2) ** 2 / (4**1.5 * math.sqrt(34))),
        ((-9.0, 1.0, 0.0, 0.0), 0.5, 1.0, 1 - (3 + 1) ** 2 / (4 * 10)),  # = 0.6
        ((2.0, 2.0, 2.0), 0.5, 1.0, 0.0),
    ],
)
def test_pq_index_hand_computed(w, p, q, expected):
    assert pq_index(t(*w), p, q).item() == pytest.approx(expected, abs=1e-12)
    assert pq_index(torch.tensor(w, dtype=torch.float32), p, q).item() == pytest.approx(expected, abs=1e-6)


def test_pq_index_over_active_entries_only():
    w = t(2.0, -8.0, 5.0, 0.0)
    mask = torch.tensor([True, True, False, False])
    assert pq_index(w, 0.5, 1.0, mask=mask).item() == pytest.approx(0.1)  # = I([1, 4]) by scale invariance
    # an active zero counts in d (it is a synapse that exists), an absent one does not
    mask[3] = True
    assert pq_index(w, 0.5, 1.0, mask=mask).item() == pytest.approx(1 - 18 / (3 * 10))


def test_pq_index_rows_match_vectors_and_empty_is_zero():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 7, generator=g)
    mask = torch.rand(5, 7, generator=g) < 0.6
    mask[2] = False  # d = 0
    w[3] = 0.0  # all active entries zero: nothing to measure
    rows = pq_index(w, 0.5, 1.0, mask=mask, dim=1)
    for i in range(5):
        assert rows[i].item() == pytest.approx(pq_index(w[i], 0.5, 1.0, mask=mask[i]).item(), abs=1e-12)
    assert rows[2].item() == 0.0 and rows[3].item() == 0.0
    assert pq_index(torch.empty(0), 0.5, 1.0).item() == 0.0
    assert pq_index(w, 0.5, 1.0, mask=torch.zeros_like(mask)).item() == 0.0


def test_pq_index_needs_p_below_q():
    for p, q in [(1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (0.5, float("inf"))]:
        with pytest.raises(ValueError, match="0 < p < q"):
            pq_index(t(1.0, 2.0), p, q)


@pytest.mark.parametrize("p,q", [(0.5, 1.0), (1.0, 2.0), (0.3, 0.7)])
def test_pq_index_properties(p, q):
    """The sparsity-measure properties the paper proves (Hurley & Rickard's D1-D4, P1, P2, and the range)."""
    g = torch.Generator().manual_seed(1)
    w = torch.rand(16, generator=g, dtype=torch.float64) + 0.1
    i = pq_index(w, p, q).item()
    d = w.numel()
    top = 1 - d ** (1 / q - 1 / p)
    # range: 0 for equal magnitudes (signs do not matter), 1 - d^(1/q-1/p) for a one-hot vector among d entries
    assert pq_index(torch.full((d,), -0.7, dtype=torch.float64) * torch.sign(w - 0.5), p, q).item() == pytest.approx(
        0.0, abs=1e-12
    )
    one_hot = torch.zeros(d, dtype=torch.float64)
    one_hot[5] = 3.0
    assert pq_index(one_hot, p, q).item() == pytest.approx(top)
    assert 0.0 < i < top
    for _ in range(20):
        assert pq_index(torch.randn(d, generator=g, dtype=torch.float64), p, q).item() <= top + 1e-12
    # a single active entry is its own equal-magnitude vector: 0
    assert pq_index(one_hot, p, q, mask=one_hot != 0).item() == pytest.approx(0.0, abs=1e-12)
    # D2 scaling and permutation invariance (and sign invariance)
    assert pq_index(4.5 * w, p, q).item() == pytest.approx(i)
    assert pq_index(w[torch.randperm(d, generator=g)], p, q).item() == pytest.approx(i)
    assert pq_index(-w, p, q).item() == pytest.approx(i)
    # D1 Robin Hood: moving mass from the largest to the smallest entry (keeping their order) lowers the index
    lo, hi = int(w.argmin()), int(w.argmax())
    robin = w.clone()
    shift = 0.25 * (w[hi] - w[lo]).item()
    robin[hi] -= shift
    robin[lo] += shift
    assert pq_index(robin, p, q).item() < i
    # D3 rising tide: adding a constant to every entry lowers it
    assert pq_index(w + 1.0, p, q).item() < i
    # D4 cloning: the vector concatenated with itself has the same index
    assert pq_index(torch.cat([w, w]), p, q).item() == pytest.approx(i)
    # P1 Bill Gates: one entry growing large raises it
    gates = w.clone()
    gates[hi] *= 10
    assert pq_index(gates, p, q).item() > i
    # P2 babies: active zeros (more sparsity) raise it
    assert pq_index(torch.cat([w, torch.zeros(8, dtype=torch.float64)]), p, q).item() > i


# -- the bound and the ratio -----------------------------------------------------------------------------------------
def test_bound_and_ratio_match_the_formulas():
    index, d = t(0.1, 0.3, 0.0, 0.99, 0.2), t(10, 40, 25, 100, 0)
    for p, q, a_r in [(0.5, 1.0, 0.001), (1.0, 2.0, 0.05), (0.5, 2.0, 0.0)]:
        r = pq_bound(index, d, p, q, a_r)
        c = rewire_ratio(r, d, 1.2, 0.9)
        for k in range(5):
            m = d[k].item() * (1 + a_r) ** (-q / (q - p)) * (1 - index[k].item()) ** (q * p / (q - p))
            assert r[k].item() == min(math.ceil(m), d[k].item())
            expected = min(max(1.2 * (1 - r[k].item() / d[k].item()), 0.0), 0.9) if d[k] > 0 else 0.0
            assert c[k].item() == pytest.approx(expected, abs=1e-15)
            assert prune_counts(c, d)[k].item() == math.floor(c[k].item() * d[k].item())
    # I = 0.1, d = 10, p = 0.5, q = 1: m = 10 * 1.001^-2 * 0.9 = 8.98 -> r = 9, c = 1.2 * 0.1 = 0.12, prune 1
    r = pq_bound(t(0.1), t(10))
    assert r.item() == 9
    assert rewire_ratio(r, t(10)).item() == pytest.approx(0.12)
    assert prune_counts(rewire_ratio(r, t(10)), t(10)).item() == 1


def test_ratio_is_clamped_by_beta_and_zero():
    # a one-hot unit of 100 active weights: I = 0.99, r = ceil(100 * 0.998 * 0.01) = 1, gamma (1 - r/d) = 1.188
    w = torch.zeros(100, dtype=torch.float64)
    w[7] = 1.0
    stats = unit_stats(w.view(1, -1), torch.ones(1, 100, dtype=torch.bool), "layer", beta=0.9)
    assert stats["index"].item() == pytest.approx(0.99) and stats["bound"].item() == 1
    assert stats["ratio"].item() == 0.9 and stats["n_prune"].item() == 90
    assert unit_stats(w.view(1, -1), torch.ones(1, 100, dtype=torch.bool), "layer", beta=0.5)["n_prune"].item() == 50
    # an incompressible unit (equal magnitudes, no tolerance): r = d, c = 0
    flat = unit_stats(torch.ones(1, 50), torch.ones(1, 50, dtype=torch.bool), "layer", a_r=0.0)
    assert flat["bound"].item() == 50 and flat["ratio"].item() == 0.0 and flat["n_prune"].item() == 0


def test_scopes_select_rows_or_the_whole_tensor():
    g = torch.Generator().manual_seed(2)
    conv = torch.randn(4, 2, 3, 3, generator=g)
    mask = torch.rand(4, 2, 3, 3, generator=g) < 0.5
    assert unit_rows(conv, "neuron").shape == (4, 18) and unit_rows(conv, "layer").shape == (1, 72)
    neuron = unit_stats(conv, mask, "neuron")
    layer = unit_stats(conv, mask, "layer")
    assert neuron["index"].shape == (4,) and layer["index"].shape == (1,)
    for i in range(4):
        assert neuron["d"][i].item() == mask[i].sum().item()
        assert neuron["index"][i].item() == pytest.approx(pq_index(conv[i], mask=mask[i]).item())
    assert layer["d"].item() == mask.sum().item()
    assert layer["index"].item() == pytest.approx(pq_index(conv, mask=mask).item())
    with pytest.raises(ValueError, match="scope"):
        unit_rows(conv, "global")


def test_pick_per_row():
    scores = torch.tensor([[5.0, 1.0, 3.0, 2.0], [1.0, 1.0, 0.5, 9.0]])
    cand = torch.tensor([[True, True, True, False], [True, True, True, True]])
    low = pick_per_row(scores, cand, torch.tensor([2, 1]), lowest=True)
    assert low.tolist() == [[False, True, True, False], [False, False, True, False]]
    high = pick_per_row(scores, cand, torch.tensor([1, 2]), lowest=False)
    assert high.tolist() == [[True, False, False, False], [True, False, False, True]]  # tie: the earlier position
    with pytest.raises(ValueError):
        pick_per_row(scores, cand, torch.tensor([4, 0]), lowest=True)


# -- the learner -----------------------------------------------------------------------------------------------------
def small(scope: str, **kw):
    model = tiny_net()
    kw.setdefault("density", 0.5)
    return (*make("pqi", model, scope=scope, dense_first=False, dense_last=False, **kw), model)


@pytest.mark.parametrize("scope", ["neuron", "layer"])
def test_round_prunes_smallest_per_unit_and_regrows_by_momentum(scope):
    learner, opt, model = small(scope, distribution="uniform")
    x, y = next(batches(1))
    train_step(model, opt, learner, x, y)  # a step: momentum exists, weights are trained
    g = torch.Generator().manual_seed(3)
    for layer in learner.layers:  # distinct magnitudes and momenta: no ties
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * layer.mask)
        learner.momentum[layer.name] = torch.randn(layer.weight.shape, generator=g)
    before = {layer.name: (layer.mask.clone(), layer.weight.detach().clone()) for layer in learner.layers}
    assert learner.on_epoch_end(0)
    record = learner.history[-1]
    assert record["round"] == 1 and record["at"] == 1
    for layer in learner.layers:
        mask0, w0 = before[layer.name]
        stats = unit_stats(w0, mask0, scope)
        rows0, rows1 = unit_rows(mask0, scope), unit_rows(layer.mask, scope)
        report = learner.last_change[layer.name]  # what the round says it dropped and grew
        dropped, grown = unit_rows(report.dropped, scope), unit_rows(report.grown, scope)
        assert not torch.any(dropped & grown), "regrew synapses it had just dropped"
        assert torch.equal(rows0 & ~rows1, dropped) and torch.equal(~rows0 & rows1, grown)  # the mask's change
        mom = unit_rows(learner.momentum[layer.name].abs(), scope)
        for i in range(rows0.shape[0]):
            n = math.floor(stats["ratio"][i].item() * stats["d"][i].item())
            assert int(dropped[i].sum()) == n == stats["n_prune"][i].item()
            if n:  # the n smallest |w| among the unit's active weights
                alive = unit_rows(w0.abs(), scope)[i][rows0[i]]
                assert unit_rows(w0.abs(), scope)[i][dropped[i]].max() < alive.sort().values[n]
            assert int(grown[i].sum()) == math.floor(0.5 * n)
            if grown[i].any():  # the largest |m| among synapses absent before the round
                absent = ~rows0[i]
                assert mom[i][grown[i]].min() >= mom[i][absent & ~grown[i]].max()
        assert torch.all(layer.weight[~mask0 & layer.mask] == 0)  # regrown start at 0
        entry = record["layers"][layer.name]
        assert entry["pruned"] == int(dropped.sum()) and entry["regrown"] == int(grown.sum())
        assert entry["active"] == layer.active() == entry["active_before"] - entry["pruned"] + entry["regrown"]
        assert entry["bound"] == int(stats["bound"].sum())
        assert entry["pq"] == pytest.approx(stats["index"][stats["d"] > 0].mean().item())
        assert entry["density"] == pytest.approx(layer.active() / layer.numel())
    check_invariants(learner, opt)
    assert sum(r["pruned"] for r in record["layers"].values()) > 0


def test_density_ratchets_down_and_metrics_log_every_round():
    learner, opt, model = small("neuron", total_epochs=6, total_steps=24)
    assert learner.density() == pytest.approx(0.5, abs=0.01)  # ER start at 50 %
    densities = [learner.density()]
    data = list(batches(24))
    for x, y in data:
        train_step(model, opt, learner, x, y)
        if learner.steps % 4 == 0 and learner.steps < 24:
            densities.append(learner.density())
            check_invariants(learner, opt)
    assert [r["at"] for r in learner.history] == [1, 2, 3, 4, 5]  # not after the last epoch
    assert all(b < a for a, b in itertools.pairwise(densities))
    m = learner.metrics()
    assert m["pqi_rounds"] == 5 and m["pqi"]["at"] == 5
    assert set(m["pqi"]["layers"]) == {layer.name for layer in learner.layers}
    assert set(m["pqi"]["layers"]["classifier.0.0"]) >= {"pq", "bound", "ratio", "density"}
    json.dumps(m)


def test_stop_criteria_and_validation():
    learner, opt, model = small("layer", max_rounds=2, total_epochs=6, total_steps=24)
    for x, y in batches(24):
        train_step(model, opt, learner, x, y)
    assert len(learner.history) == 2
    learner, opt, model = small("layer", min_ratio=1.0)  # every unit counts as incompressible
    for x, y in batches(8):
        train_step(model, opt, learner, x, y)
    assert learner.history and all(v["pruned"] == 0 for r in learner.history for v in r["layers"].values())
    bads = [{"scope": "global"}, {"p": 1.0, "q": 0.5}, {"beta": 1.5}, {"regrow_ratio": -0.1}, {"drop_fraction": 0.2}]
    for bad in bads:
        with pytest.raises(ValueError):
            small(bad.pop("scope", "neuron"), **bad)


def test_defaults_are_the_spec():
    model = tiny_net()
    learner, _ = make("pqi", model)
    assert (learner.p, learner.q, learner.a_r, learner.gamma, learner.beta) == (0.5, 1.0, 0.001, 1.2, 0.9)
    assert (learner.regrow_ratio, learner.scope, learner.epoch_frequency) == (0.5, "neuron", 1)
    assert learner.distribution == "er" and learner.density_target == 0.5
    assert [layer.name for layer in learner.layers] == ["features.2.0.0"]  # first and last layer dense


def test_state_round_trip_continues_identically():
    learner, opt, model = small("neuron", total_epochs=4, total_steps=16)
    data = list(batches(16))
    for x, y in data[:6]:
        train_step(model, opt, learner, x, y)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), learner.state_dict()))
    for x, y in data[6:]:
        train_step(model, opt, learner, x, y)
    model2 = tiny_net(99)
    learner2, opt2 = make(
        "pqi",
        model2,
        density=0.5,
        scope="neuron",
        dense_first=False,
        dense_last=False,
        seed=7,
        total_epochs=4,
        total_steps=16,
    )
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    learner2.load_state_dict(saved[2])
    assert learner2.history == learner.history[:1]
    for x, y in data[6:]:
        train_step(model2, opt2, learner2, x, y)
    assert learner2.history == learner.history and learner2.metrics() == learner.metrics()
    for (k, v1), v2 in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k


def test_engine_resume_gives_identical_metrics(tmp_path):
    toml = tiny_toml(method="pqi", density=0.5, params='{ scope = "neuron" }')
    toml = toml.replace('method = "pqi"', 'method = "pqi"\ndense_first = false')  # a 2-layer MLP
    full = Trainer(load_config_text(toml), tmp_path / "full", quiet=True)
    full.fit()
    assert [r["at"] for r in full.learner.history] == [1, 2]
    cut = Trainer(load_config_text(toml), tmp_path / "cut", quiet=True)
    original_step = cut.learner.step

    def step_then_stop() -> bool:
        changed = original_step()
        if cut.learner.steps == 8:  # epoch 2, batch 2
            cut.request_stop()
        return changed

    cut.learner.step = step_then_stop  # type: ignore[method-assign]
    with pytest.raises(RunInterrupted):
        cut.fit()
    resumed = Trainer.resume(tmp_path / "cut", quiet=True)
    resumed.fit()

    records = run_metrics(tmp_path / "full")
    assert records == run_metrics(tmp_path / "cut")
    assert [r["pqi_rounds"] for r in records] == [1, 2, 2]
    assert records[0]["density"] > records[1]["density"]
    assert all(v["ratio"] > 0 for v in records[0]["pqi"]["layers"].values())

    # bench/pqi_trajectory.py reads the same lines back as one row per round (the 3rd epoch ran no round)
    from tests.conftest import load_bench

    bench = load_bench("pqi_trajectory")
    traj = bench.trajectory(tmp_path / "full")
    assert traj["finished"] and traj["scope"] == "neuron"
    assert [(r["round"], r["epoch"]) for r in traj["rounds"]] == [(1, 1), (2, 2)]
    assert [r["density"] for r in traj["rounds"]] == [records[0]["density"], records[1]["density"]]
    for r, rec in zip(traj["rounds"], records, strict=False):
        assert r["active"] == sum(v["active"] for v in rec["pqi"]["layers"].values())
    assert "| 2 | 2 |" in bench.markdown({"runs": [traj]})
