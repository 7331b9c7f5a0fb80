"""Property tests of the structure learners on a tiny SNN: density, zeroed weights and moments, disjoint rewiring,
seeding, and state round trips."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsesnn.models import NeuronSpec, build_model
from sparsesnn.sparse import METHODS, StructureLearner
from sparsesnn.sparse.masks import layer_densities, select_layers

EAGER = NeuronSpec(backend="eager")


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("convnet", in_channels=1, num_classes=4, input_size=8, channels=(4, 6), neuron=EAGER)


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield torch.rand(2, 8, 1, 8, 8, generator=g) * 2, torch.randint(0, 4, (8,), generator=g)


def make(method: str, model: nn.Module, opt_name: str = "adam", **kw) -> tuple[StructureLearner, torch.optim.Optimizer]:
    opt = (
        torch.optim.Adam(model.parameters(), lr=0.01)
        if opt_name == "adam"
        else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    )
    if not {"total_steps", "total_epochs"} & set(kw):
        kw.update(total_steps=12, total_epochs=3)
    kw.setdefault("steps_per_epoch", 4)
    return METHODS[method](model, opt, **kw), opt


def train_step(model, opt, learner, x, y) -> bool:
    out = model(x)
    loss = nn.functional.cross_entropy(out.mean(0), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = learner.step()
    if learner.steps % learner.steps_per_epoch == 0:
        changed = learner.on_epoch_end(learner.steps // learner.steps_per_epoch - 1) or changed
    return changed


def expected_counts(learner: StructureLearner) -> dict[str, int]:
    return {layer.name: layer.active() for layer in learner.layers}


def check_invariants(learner: StructureLearner, opt: torch.optim.Optimizer) -> None:
    for layer in learner.layers:
        absent = ~layer.mask
        assert torch.all(layer.weight[absent] == 0), f"{layer.name}: absent weight not zero"
        state = opt.state.get(layer.weight, {})
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == layer.mask.shape:
                assert torch.all(value[absent] == 0), f"{layer.name}: optimiser {key} of absent synapse not zero"


METHOD_KW = {
    "static": {},
    "set": {"update_unit": "steps", "update_every": 2},
    "rigl": {"update_every": 2},
    "rigl-momentum": {"update_every": 3, "grow": "momentum"},
}


@settings(max_examples=15, deadline=None)
@given(
    method=st.sampled_from(sorted(METHOD_KW)),
    density=st.floats(0.05, 0.9),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
    opt_name=st.sampled_from(["adam", "sgd"]),
    seed=st.integers(0, 1000),
)
def test_constant_density_learners_hold_every_invariant(method, density, distribution, opt_name, seed):
    model = tiny_net(seed)
    name = method.split("-")[0]
    learner, opt = make(
        name, model, opt_name, density=density, distribution=distribution, seed=seed, **METHOD_KW[method]
    )
    counts = expected_counts(learner)
    targets = layer_densities([layer.weight for layer in learner.layers], density, distribution)
    for layer, d in zip(learner.layers, targets, strict=True):
        assert counts[layer.name] == max(1, min(layer.numel(), round(d * layer.numel())))
    check_invariants(learner, opt)
    for x, y in batches(12, seed):
        before = {layer.name: layer.mask.clone() for layer in learner.layers}
        learner.last_change = {}
        changed = train_step(model, opt, learner, x, y)
        check_invariants(learner, opt)
        assert expected_counts(learner) == counts  # per layer, hence global, exactly
        if name != "static":
            assert bool(learner.last_change) == changed  # a change is reported exactly when one happened
        for layer in learner.layers:
            check_reported_change(learner, layer, before[layer.name])
    if name != "static":
        assert learner.history, "no rewiring happened"


def check_reported_change(learner: StructureLearner, layer, mask_before: torch.Tensor) -> None:
    """The sets the learner says it dropped and grew are disjoint, were active (dropped) or absent (grown) before,
    and are exactly the mask's change; regrown synapses start at 0 (the default grow_init)."""
    report = learner.last_change.get(layer.name)
    if report is None:
        assert torch.equal(layer.mask, mask_before), f"{layer.name} changed but the learner reported no change"
        return
    assert not torch.any(report.dropped & report.grown), f"{layer.name}: regrew synapses it had just dropped"
    assert torch.all(mask_before[report.dropped]) and not torch.any(mask_before[report.grown])
    assert torch.equal(mask_before & ~layer.mask, report.dropped)
    assert torch.equal(~mask_before & layer.mask, report.grown)
    assert torch.all(layer.weight[report.grown] == 0)


def test_regrown_start_at_configured_value():
    model = tiny_net()
    learner, opt = make("rigl", model, density=0.3, update_every=1, grow_init=0.125)
    x, y = next(batches(1))
    before = {layer.name: layer.mask.clone() for layer in learner.layers}
    assert train_step(model, opt, learner, x, y)
    for layer in learner.layers:
        grown = ~before[layer.name] & layer.mask
        assert grown.any() and torch.all(layer.weight[grown] == 0.125)


def test_gradient_growth_picks_largest_dense_gradient():
    model = tiny_net()
    learner, opt = make("rigl", model, density=0.3, update_every=1, drop_fraction=0.2)
    x, y = next(batches(1))
    captured = {}
    learner.masks.grad_sink = lambda n, g: captured.__setitem__(n, g.clone()) or learner._sink_grad(n, g)
    before = {layer.name: layer.mask.clone() for layer in learner.layers}
    train_step(model, opt, learner, x, y)
    for layer in learner.layers:
        grown = ~before[layer.name] & layer.mask
        candidates = ~before[layer.name]
        scores = captured[layer.name].abs()
        threshold = scores[grown].min()
        # every non-chosen candidate has a gradient no larger than the smallest chosen one
        assert torch.all(scores[candidates & ~grown] <= threshold)


def test_dense_gradient_captured_only_on_update_steps():
    model = tiny_net()
    learner, opt = make("rigl", model, density=0.3, update_every=3)
    armed = []
    for x, y in batches(7):
        armed.append(learner.masks.capture)
        train_step(model, opt, learner, x, y)
    assert armed == [False, False, True, False, False, True, False]


def test_same_seed_same_masks_different_seed_different():
    def masks(seed):
        model = tiny_net(0)
        learner, opt = make("rigl", model, density=0.2, update_every=2, seed=seed)
        for x, y in batches(6):
            train_step(model, opt, learner, x, y)
        return [layer.mask.clone() for layer in learner.layers]

    a, b, c = masks(1), masks(1), masks(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "method,kw",
    [
        ("rigl", {"update_every": 2}),
        ("set", {"update_unit": "steps", "update_every": 2}),
        ("gmp", {"update_every": 2}),
        ("rigl", {"update_every": 3, "grow": "momentum"}),
    ],
)
def test_mid_run_state_round_trip_continues_identically(method, kw):
    model = tiny_net()
    learner, opt = make(method, model, density=0.25, **kw)
    data = list(batches(12))
    for x, y in data[:5]:
        train_step(model, opt, learner, x, y)
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    learner_state = copy.deepcopy(learner.state_dict())
    for x, y in data[5:]:
        train_step(model, opt, learner, x, y)
    # a fresh model, optimiser and learner restored from the mid-run state
    model2 = tiny_net(99)
    learner2, opt2 = make(method, model2, density=0.25, seed=123, **kw)
    model2.load_state_dict(model_state)
    opt2.load_state_dict(opt_state)
    learner2.load_state_dict(learner_state)
    for x, y in data[5:]:
        train_step(model2, opt2, learner2, x, y)
    for (k, v1), v2 in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k


def test_gmp_reaches_target_by_end_and_never_regrows():
    model = tiny_net()
    learner, opt = make("gmp", model, density=0.2, update_every=1, end_at=0.5, total_steps=12)
    assert learner.density() == 1.0
    prev = {layer.name: layer.mask.clone() for layer in learner.layers}
    for x, y in batches(12):
        train_step(model, opt, learner, x, y)
        for layer in learner.layers:
            assert not torch.any(layer.mask & ~prev[layer.name])  # nothing comes back
            prev[layer.name] = layer.mask.clone()
        check_invariants(learner, opt)
    assert learner.density() == pytest.approx(0.2, abs=0.01)


def test_drop_fraction_follows_cosine_and_stops():
    model = tiny_net()
    learner, _ = make("rigl", model, density=0.3, total_steps=100, stop_at=0.75, update_every=10)
    assert learner.alpha(0) == pytest.approx(0.3)
    assert learner.alpha(37) == pytest.approx(0.15 * (1 + torch.cos(torch.tensor(torch.pi * 37 / 75)).item()))
    assert learner.alpha(75) == 0.0 and not learner.is_update(100)


def test_layer_selection_options():
    model = tiny_net()
    names = [n for n, _ in select_layers(model)]
    assert len(names) == 3
    assert [n for n, _ in select_layers(model, dense_first=True, dense_last=True)] == names[1:2]
    assert [n for n, _ in select_layers(model, exclude=["classifier*"])] == names[:2]
    with pytest.raises(ValueError, match="no layer left"):
        select_layers(model, include=["nothing*"])


def test_erk_solves_global_density_with_dense_saturation():
    weights = [torch.zeros(4, 1, 3, 3), torch.zeros(64, 32, 3, 3), torch.zeros(10, 1024)]
    dens = layer_densities(weights, 0.3, "erk")
    sizes = [w.numel() for w in weights]
    assert sum(d * n for d, n in zip(dens, sizes, strict=True)) / sum(sizes) == pytest.approx(0.3)
    assert dens[0] == 1.0 and all(0 < d <= 1 for d in dens)
    with pytest.raises(ValueError, match="density must be in"):
        layer_densities(weights, 1.5, "erk")


def test_finalize_bakes_masks_and_removes_hooks():
    model = tiny_net()
    learner, _opt = make("rigl", model, density=0.3, update_every=2)
    x, _ = next(batches(1))
    out_before = model(x)
    masked = [layer.weight for layer in learner.layers]
    plain = learner.finalize()
    assert not any(k.endswith("weight_mask") for k in plain.state_dict())
    torch.testing.assert_close(plain(x), out_before)
    nonzero = sum(int((w != 0).sum()) for w in masked)
    assert nonzero <= round(0.3 * sum(w.numel() for w in masked)) + len(masked)


def test_masks_travel_with_state_dict_and_survive_foreign_load():
    model = tiny_net()
    learner, opt = make("static", model, density=0.3)
    keys = [k for k in model.state_dict() if k.endswith(("weight_mask", "neuron_mask"))]
    assert len(keys) == 6
    dense_state = tiny_net(5).state_dict()  # a dense checkpoint loaded into the masked model
    for k in keys:
        dense_state[k] = model.state_dict()[k]
    model.load_state_dict(dense_state)
    check_invariants(learner, opt)


def test_lth_prunes_rewinds_and_resets_per_round():
    model = tiny_net()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    learner, opt = make("lth", model, density=0.25, rounds=3, total_epochs=3, steps_per_epoch=2, total_steps=6)
    assert learner.density() == 1.0 and learner.prune_rate == pytest.approx(0.5)
    data = list(batches(6))
    densities = []
    for epoch in range(3):
        for x, y in data[2 * epoch : 2 * epoch + 2]:
            out = model(x)
            loss = nn.functional.cross_entropy(out.mean(0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            learner.step()
        changed = learner.on_epoch_end(epoch)
        densities.append(learner.density())
        if epoch < 2:
            assert changed and not opt.state  # optimiser state cleared at the round boundary
            for layer in learner.layers:  # survivors rewound to their initial values
                key = f"{layer.name}.weight"
                assert torch.equal(layer.weight[layer.mask], initial[key][layer.mask])
            check_invariants(learner, opt)
    assert densities[0] == pytest.approx(0.5, abs=0.01) and densities[1] == pytest.approx(0.25, abs=0.01)
    assert densities[2] == densities[1]  # no pruning after the last round


def test_lth_validates_rounds_against_epochs():
    with pytest.raises(ValueError, match="multiple of rounds"):
        make("lth", tiny_net(), density=0.25, rounds=3, total_epochs=4)
