"""Coarse granularity (sparsesnn.sparse.granularity): groups of weights pruned and grown together, all present or all
absent, in the initial masks, the rewiring learners, the PQ index, GMP and LTH; the default keeps the old draws."""

from __future__ import annotations

import itertools
import math
from typing import get_args

import pytest
import torch
from torch import nn

from sparsesnn.core.errors import ConfigError
from sparsesnn.sparse import METHODS, StructureLearner
from sparsesnn.sparse.granularity import GRANULARITIES, Grouping
from sparsesnn.sparse.masks import active_count, layer_densities, random_mask
from sparsesnn.train.config import SparseConfig, load_config_text
from sparsesnn.train.factory import build_learner
from tests.conftest import tiny_toml

COARSE = [("block", 8), ("block", 4), ("tap", 8), ("kernel", 8)]


# -- the groups ------------------------------------------------------------------------------------------------------
def reference_ids(shape: tuple[int, ...], granularity: str, block: int) -> torch.Tensor:
    """Each weight's group, by the definition written out index by index (a loop, unlike the module)."""
    ids: dict[tuple[int, ...], int] = {}
    out = torch.empty(shape, dtype=torch.int64)
    for index in itertools.product(*(range(s) for s in shape)):
        o, c, taps = index[0], index[1], index[2:]
        key = {
            "weight": index,
            "block": (o // block, c, *taps),
            "tap": (c, *taps),
            "kernel": (o, c),
        }[granularity]
        out[index] = ids.setdefault(key, len(ids))
    return out


SHAPES = [(12, 3, 3, 3), (16, 3, 3, 3), (10, 6), (5, 2, 3), (6, 2, 2, 1, 2), (1, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_groups_are_the_definition_and_reduce_expand_agree(shape, granularity):
    grouping = Grouping(shape, granularity, block_size=4)
    ref = reference_ids(shape, granularity, 4)
    n = int(ref.max()) + 1
    assert grouping.n_groups == n == math.prod(grouping.group_shape)
    ids = grouping.expand(torch.arange(n).view(grouping.group_shape))
    assert ids.shape == torch.Size(shape)
    # the same partition of the weights: a bijection between our group ids and the reference's
    assert len(set(zip(ids.flatten().tolist(), ref.flatten().tolist(), strict=True))) == n
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    sums = torch.zeros(n).index_add_(0, ids.flatten(), x.flatten()).view(grouping.group_shape)
    assert torch.allclose(grouping.reduce(x), sums, atol=1e-6)
    sizes = grouping.sizes()
    assert int(sizes.sum()) == math.prod(shape)
    assert torch.equal(sizes.flatten(), torch.bincount(ids.flatten(), minlength=n))
    if granularity == "kernel" and len(shape) == 2:
        assert grouping.is_identity  # a Linear has no taps: its kernels are single weights


def test_block_groups_and_counts_by_hand():
    grouping = Grouping((12, 3, 3, 3), "block", block_size=8)
    assert grouping.group_shape == (2, 3, 3, 3)
    assert grouping.sizes()[:, 0, 0, 0].tolist() == [8, 4]  # the last block of 12 outputs holds 4
    mask = torch.zeros(12, 3, 3, 3, dtype=torch.bool)
    mask[0:8, 1, 2, 0] = True
    assert grouping.holds(mask) and int(grouping.all_of(mask).sum()) == 1
    mask[8, 0, 0, 0] = True  # one weight of a block: the invariant is broken
    assert not grouping.holds(mask) and not bool(grouping.all_of(mask)[1, 0, 0, 0])
    assert not bool(grouping.none_of(mask)[1, 0, 0, 0])
    assert [grouping.group_count(d) for d in (0.0, 0.1, 0.5, 1.0)] == [1, 5, 27, 54]  # round(d * 54), at least 1
    assert Grouping((12, 3, 3, 3), "tap").group_shape == (1, 3, 3, 3)
    assert Grouping((12, 3, 3, 3), "kernel").group_shape == (12, 3, 1, 1)
    with pytest.raises(ValueError, match="granularity"):
        Grouping((4, 4), "row")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size"):
        Grouping((4, 4), "block", 0)


# -- a small network with Conv2d and Linear layers -------------------------------------------------------------------
def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 12, 3, padding=1),  # 12 outputs: blocks of 8 leave a block of 4
        nn.ReLU(),
        nn.Conv2d(12, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 20),
        nn.ReLU(),
        nn.Linear(20, 5),
    )


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield torch.randn(4, 2, 6, 6, generator=g), torch.randint(0, 5, (4,), generator=g)


def make(method: str, model: nn.Module, **kw) -> tuple[StructureLearner, torch.optim.Optimizer]:
    """The learner and its Adam optimiser; a budget of 12 steps in epochs of 2 unless given (None: left out)."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    kw = {"total_steps": 12, "steps_per_epoch": 2} | kw
    return METHODS[method](model, opt, **{k: v for k, v in kw.items() if v is not None}), opt


def train_step(model: nn.Module, opt: torch.optim.Optimizer, learner: StructureLearner, x, y) -> bool:
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = learner.step()
    if learner.steps % learner.steps_per_epoch == 0:
        changed = learner.on_epoch_end(learner.steps // learner.steps_per_epoch - 1) or changed
    return changed


def assert_grouped(learner: StructureLearner) -> None:
    for layer in learner.layers:
        grouping = learner.grouping(layer)
        assert grouping.holds(layer.mask), f"{layer.name}: a group is partly present"
        assert torch.all(layer.weight[~layer.mask] == 0)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize(("granularity", "block_size"), COARSE)
def test_initial_masks_are_whole_groups_at_exact_counts(granularity, block_size, distribution):
    learner, _ = make(
        "static", net(), density=0.3, distribution=distribution, granularity=granularity, block_size=block_size
    )
    assert_grouped(learner)
    densities = layer_densities([layer.weight for layer in learner.layers], 0.3, distribution)
    for layer, d in zip(learner.layers, densities, strict=True):
        grouping = learner.grouping(layer)
        assert int(grouping.all_of(layer.mask).sum()) == max(1, round(d * grouping.n_groups))
        assert layer.active() == int(grouping.sizes()[grouping.all_of(layer.mask)].sum())  # density in weights


def test_weight_granularity_draws_what_it_drew_before():
    """The default and ``granularity = "weight"`` draw the old masks: ``random_mask`` of ``round(d n)`` weights per
    layer, from the learner's generator, in layer order (whatever ``block_size`` says)."""
    default, _ = make("static", net(), density=0.3, seed=5)
    explicit, _ = make("static", net(), density=0.3, seed=5, granularity="weight", block_size=3)
    g = torch.Generator().manual_seed(5)
    densities = layer_densities([layer.weight for layer in default.layers], 0.3, "erk")
    for a, b, d in zip(default.layers, explicit.layers, densities, strict=True):
        old = random_mask(a.mask.shape, active_count(a.numel(), d), g, a.mask.device)
        assert torch.equal(a.mask, old) and torch.equal(b.mask, old)


REWIRING = [
    ("rigl", {}),  # magnitude out, gradient in
    ("esl", {"dense_first": False, "dense_last": False}),
    ("rigl", {"grow": "momentum"}),
    ("rigl", {"prune": "random", "grow": "random"}),
    ("set", {"prune": "magnitude", "update_unit": "steps"}),
    ("set", {"prune": "random", "update_unit": "steps", "grow_init": 0.25}),
]


def layer_state(learner: StructureLearner) -> dict[str, tuple[torch.Tensor, int, int]]:
    out = {}
    for layer in learner.layers:
        grouping = learner.grouping(layer)
        out[layer.name] = (layer.mask.clone(), int(grouping.all_of(layer.mask).sum()), layer.active())
    return out


@pytest.mark.parametrize(("method", "kw"), REWIRING, ids=[f"{m}-{'-'.join(map(str, k.values()))}" for m, k in REWIRING])
@pytest.mark.parametrize(("granularity", "block_size"), COARSE)
def test_rewiring_moves_whole_groups_at_constant_density(method, kw, granularity, block_size):
    model = net(1)
    learner, _ = make(
        method,
        model,
        density=0.3,
        update_every=2,
        drop_fraction=0.4,
        stop_at=1.0,
        granularity=granularity,
        block_size=block_size,
        seed=2,
        **kw,
    )
    opt = learner.optimizer
    changes = 0
    for x, y in batches(10, seed=3):
        before = layer_state(learner)
        learner.last_change = {}
        changed = train_step(model, opt, learner, x, y)
        assert_grouped(learner)
        assert bool(learner.last_change) == changed
        for layer in learner.layers:
            mask0, groups0, weights0 = before[layer.name]
            grouping = learner.grouping(layer)
            assert int(grouping.all_of(layer.mask).sum()) == groups0 and layer.active() == weights0  # exact density
            report = learner.last_change.get(layer.name)
            if report is None:
                assert torch.equal(layer.mask, mask0)
                continue
            changes += 1
            assert not torch.any(report.dropped & report.grown)
            assert torch.all(mask0[report.dropped]) and not torch.any(mask0[report.grown])
            assert torch.equal(mask0 & ~layer.mask, report.dropped) and torch.equal(~mask0 & layer.mask, report.grown)
            assert grouping.holds(report.dropped) and grouping.holds(report.grown)
            assert torch.all(layer.weight[report.grown] == kw.get("grow_init", 0.0))
            # per group size s: floor(alpha * a_s) groups (one size: floor(alpha * active groups))
            alpha = learner.history[-1]["alpha"]
            sizes, present0 = grouping.sizes(), grouping.all_of(mask0)
            dropped_groups = grouping.all_of(report.dropped)
            expected = 0
            for s in torch.unique(sizes).tolist():
                n_s = math.floor(alpha * int((present0 & (sizes == s)).sum()))
                assert int((dropped_groups & (sizes == s)).sum()) == n_s
                expected += n_s
            assert int(grouping.all_of(report.grown).sum()) == int(dropped_groups.sum()) == expected
            if len(torch.unique(sizes)) == 1:
                assert expected == math.floor(alpha * groups0)
    assert changes > 0, "no rewiring happened"


@pytest.mark.parametrize(("granularity", "block_size"), COARSE)
def test_magnitude_and_gradient_rank_group_sums(granularity, block_size):
    model = net(2)
    learner, opt = make(
        "rigl",
        model,
        density=0.3,
        update_every=1,
        drop_fraction=0.3,
        granularity=granularity,
        block_size=block_size,
        dense_first=False,
    )
    captured: dict[str, torch.Tensor] = {}
    learner.masks.grad_sink = lambda n, g: captured.__setitem__(n, g.clone()) or learner._sink_grad(n, g)
    x, y = next(batches(1))
    before = {layer.name: layer.mask.clone() for layer in learner.layers}
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    weights = {layer.name: layer.weight.detach().clone() for layer in learner.layers}  # what the update ranks
    assert learner.step()
    changed = 0
    for layer in learner.layers:
        grouping = learner.grouping(layer)
        report = learner.last_change.get(layer.name)
        if report is None:  # a layer with too few groups for floor(alpha * a) > 0
            continue
        changed += 1
        sizes = grouping.sizes()
        present, absent = grouping.all_of(before[layer.name]), grouping.none_of(before[layer.name])
        dropped, grown = grouping.all_of(report.dropped), grouping.all_of(report.grown)
        norms = grouping.reduce(weights[layer.name].abs())
        grads = grouping.reduce(captured[layer.name].abs())
        for s in torch.unique(sizes).tolist():
            same = sizes == s
            if (dropped & same).any():  # no kept group of this size is smaller than a dropped one
                assert norms[present & same & ~dropped].min() >= norms[dropped & same].max()
                assert grads[absent & same & ~grown].max() <= grads[grown & same].min()
    assert changed >= 2


@pytest.mark.parametrize(("granularity", "block_size"), [("block", 4), ("kernel", 8)])
def test_growth_avoids_groups_of_pruned_neurons(granularity, block_size):
    model = net(3)
    learner, opt = make(
        "rigl",
        model,
        density=0.2,
        update_every=1,
        drop_fraction=0.5,
        granularity=granularity,
        block_size=block_size,
        prune="random",
        grow="random",
    )
    layer = learner.layers[0]  # the second conv (the first is dense in RigL)
    alive = torch.ones(16, dtype=torch.bool)
    alive[[1, 6]] = False
    learner.masks.set_neuron_mask(layer, alive)
    for x, y in batches(4):
        train_step(model, opt, learner, x, y)
        assert not torch.any(layer.mask[~alive])
        report = learner.last_change[layer.name]
        assert not torch.any(report.grown & ~layer.alive_synapse_slots())
    if granularity == "kernel":
        assert learner.grouping(layer).holds(layer.mask)  # a dead neuron's kernels are whole groups


def test_kernel_granularity_on_linear_layers_is_weight_granularity():
    def masks(**kw):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        learner, opt = make("rigl", model, density=0.3, update_every=1, grow="random", dense_first=False, **kw)
        g = torch.Generator().manual_seed(1)
        for _ in range(4):
            x, y = torch.randn(6, 8, generator=g), torch.randint(0, 4, (6,), generator=g)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            learner.step()
        return [layer.mask.clone() for layer in learner.layers]

    assert all(torch.equal(a, b) for a, b in zip(masks(), masks(granularity="kernel"), strict=True))


# -- the PQ index ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("granularity", "block_size", "scope"),
    [("block", 8, "neuron"), ("block", 4, "layer"), ("tap", 8, "layer"), ("kernel", 8, "neuron")],
)
def test_pqi_rounds_prune_and_regrow_whole_groups(granularity, block_size, scope):
    model = net(4)
    learner, opt = make(
        "pqi",
        model,
        scope=scope,
        granularity=granularity,
        block_size=block_size,
        density=0.6,
        dense_first=False,
        dense_last=False,
        total_epochs=6,
        steps_per_epoch=2,
    )
    assert_grouped(learner)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # inputs and taps of very different importance: group norms a PQ index calls compressible
        for layer in learner.layers:
            layer.weight.mul_(torch.rand(layer.weight.shape[1:], generator=g) ** 6)
    rounds = 0
    for x, y in batches(12, seed=1):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        learner.step()
        if learner.steps % 2 or learner.steps == 12:
            continue
        before = {layer.name: layer.mask.clone() for layer in learner.layers}
        stats = {layer.name: learner.stage_one(layer) for layer in learner.layers}
        learner.last_change = {}
        learner.on_epoch_end(learner.steps // 2 - 1)
        rounds += 1
        assert_grouped(learner)
        for layer in learner.layers:
            grouping = learner.grouping(layer)
            report = learner.last_change.get(layer.name)
            if report is None:
                continue
            mask0 = before[layer.name]
            assert not torch.any(report.dropped & report.grown)
            assert torch.equal(mask0 & ~layer.mask, report.dropped) and torch.equal(~mask0 & layer.mask, report.grown)
            rows = grouping.all_of(report.dropped).reshape(stats[layer.name]["n_prune"].shape[0], -1)
            assert rows.sum(1).tolist() == stats[layer.name]["n_prune"].tolist()  # floor(c d) groups per unit
            regrown = grouping.all_of(report.grown).reshape(rows.shape[0], -1).sum(1)
            absent = grouping.none_of(mask0).reshape(rows.shape[0], -1).sum(1)  # regrowth is capped by these
            expected = [min(math.floor(0.5 * n), a) for n, a in zip(rows.sum(1).tolist(), absent.tolist(), strict=True)]
            assert regrown.tolist() == expected
    assert rounds == 5 and sum(r["layers"][n]["pruned"] for r in learner.history for n in r["layers"]) > 0


# -- GMP and LTH -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("granularity", "block_size"), COARSE)
def test_gmp_prunes_whole_groups_to_the_target(granularity, block_size):
    model = net(5)
    learner, opt = make(
        "gmp", model, density=0.2, update_every=1, end_at=0.5, granularity=granularity, block_size=block_size
    )
    for x, y in batches(12):
        train_step(model, opt, learner, x, y)
        assert_grouped(learner)
    for layer in learner.layers:
        grouping = learner.grouping(layer)
        assert int(grouping.all_of(layer.mask).sum()) == grouping.group_count(learner.targets[layer.name])


@pytest.mark.parametrize(("granularity", "block_size"), COARSE)
def test_lth_prunes_whole_groups_per_layer(granularity, block_size):
    model = net(6)
    learner, opt = make(
        "lth",
        model,
        density=0.3,
        rounds=3,
        granularity=granularity,
        block_size=block_size,
        total_steps=None,
        total_epochs=6,
        steps_per_epoch=2,
    )
    counts = [{layer.name: int(learner.grouping(layer).all_of(layer.mask).sum()) for layer in learner.layers}]
    for x, y in batches(12):
        if train_step(model, opt, learner, x, y):
            counts.append(
                {layer.name: int(learner.grouping(layer).all_of(layer.mask).sum()) for layer in learner.layers}
            )
        assert_grouped(learner)
    assert len(counts) == 3
    rate = learner.prune_rate
    for a, b in itertools.pairwise(counts):
        assert b == {name: n - math.floor(rate * n) for name, n in a.items()}


# -- refusals and the config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "kw", "message"),
    [
        ("set", {"granularity": "block"}, r"set: .*prune = 'set' reads the sign.*granularity = 'block'"),
        ("rigl", {"granularity": "tap", "prune": "set"}, r"rigl: .*prune = 'set'.*granularity = 'tap'"),
        ("sdsnn", {"granularity": "kernel"}, r"sdsnn: granularity = 'kernel': Input should be 'weight'"),
        ("lth", {"granularity": "block", "scope": "global", "rounds": 2}, r"lth: .*scope = 'global'.*granularity"),
        ("pqi", {"granularity": "tap"}, r"pqi: .*scope = 'neuron' with granularity = 'tap'"),
    ],
)
def test_combinations_without_a_meaning_are_refused(method, kw, message):
    with pytest.raises(ValueError, match=message):
        make(method, net(), total_steps=None, total_epochs=40, **kw)


def test_the_config_passes_granularity_through():
    literal, none = get_args(SparseConfig.model_fields["granularity"].annotation)  # Literal[...] | None
    assert get_args(literal) == GRANULARITIES and none is type(None)
    text = tiny_toml("rigl", 0.3).replace('method = "rigl"', 'method = "rigl"\ngranularity = "block"\nblock_size = 4')
    cfg = load_config_text(text)
    learner = build_learner(cfg.sparse, net(), None, total_steps=12, steps_per_epoch=4, total_epochs=3, seed=0)
    assert (learner.settings.granularity, learner.settings.block_size) == ("block", 4)
    assert_grouped(learner)
    default = build_learner(
        load_config_text(tiny_toml()).sparse, net(), None, total_steps=12, steps_per_epoch=4, total_epochs=3, seed=0
    )
    assert (default.settings.granularity, default.settings.block_size) == ("weight", 8)
    with pytest.raises(ConfigError, match="granularity"):
        load_config_text(tiny_toml().replace('method = "rigl"', 'method = "rigl"\ngranularity = "row"'))
    with pytest.raises(ConfigError, match="block_size"):
        load_config_text(tiny_toml().replace('method = "rigl"', 'method = "rigl"\nblock_size = 0'))
    dense = tiny_toml("dense").replace('method = "dense"', 'method = "dense"\ngranularity = "tap"')
    with pytest.raises(ConfigError, match="granularity = 'tap'"):
        build_learner(
            load_config_text(dense).sparse, net(), None, total_steps=12, steps_per_epoch=4, total_epochs=3, seed=0
        )
    sdsnn = tiny_toml("sdsnn", 1.0, "{ N = 1 }").replace('method = "sdsnn"', 'method = "sdsnn"\ngranularity = "tap"')
    with pytest.raises(ConfigError, match=r"sdsnn.*granularity"):
        build_learner(
            load_config_text(sdsnn).sparse, net(), None, total_steps=60, steps_per_epoch=4, total_epochs=15, seed=0
        )
