"""The learner API contract (issue 23): what a method needs is required, a forgotten hook is reported, the README's
loop serves every method, and absent synapses stay out of the forward pass whatever optimiser is stepped."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsesnn.sparse as sp
from sparsesnn.neuron.lif import LIF
from sparsesnn.sparse.learner import resolve_budget

REPO = Path(__file__).resolve().parents[1]
ALL_METHODS = ("dense", "static", "set", "rigl", "gmp", "lth", "esl", "evokd", "sdsnn", "pqi")
#: epoch-level methods and what they need besides the budget to fire within a short run
EPOCH_LEVEL = {"set": {}, "lth": {}, "pqi": {}, "sdsnn": {"N": 1}}


class TinySNN(nn.Module):
    """A time-major spiking MLP: ``[T, B, 16] -> [T, B, 4]``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(16, 48), LIF(backend="eager")
        self.fc2, self.lif2 = nn.Linear(48, 32), LIF(backend="eager")
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lif2(self.fc2(self.lif1(self.fc1(x)))))


def tiny_loader(n_batches: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(2, 8, 16, generator=g) * 3, torch.randint(0, 4, (8,), generator=g)) for _ in range(n_batches)]


def readme_example() -> str:
    """The Python example of README.md ("From Python, on your own network"), as written."""
    text = (REPO / "README.md").read_text()
    start = text.index("From Python, on your own network:")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None
    return match.group(1)


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output.mean(0), target)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_the_readme_loop_serves_every_method(method: str) -> None:
    code = readme_example()
    assert 'sp.METHODS["rigl"](model, opt, density=0.1, ' in code
    code = code.replace('"rigl"', repr(method))
    if method == "dense":
        code = code.replace("density=0.1", "density=1.0")
    setup, loop = code.split("for epoch in range(epochs):", 1)
    torch.manual_seed(0)
    namespace = {"MySNN": TinySNN, "loader": tiny_loader(), "loss_fn": loss_fn, "epochs": 40, "print": lambda *a: None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loop as written is a correct use: no misuse warning
        exec(setup, namespace)
        learner = namespace["learner"]
        digest = learner.topology_digest()
        exec("for epoch in range(epochs):" + loop, namespace)
    assert learner.steps == 160 and learner.epochs_seen == 40
    if method in ("dense", "static"):
        assert learner.topology_digest() == digest
    else:
        assert learner.topology_digest() != digest, f"{method} never changed the topology in the README's loop"


# -- what a method needs is required -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("rigl", {}, "pass total_steps="),
        ("esl", {}, "pass total_steps="),
        ("gmp", {}, "pass total_steps="),
        ("set", {"total_steps": 100}, "total_epochs and steps_per_epoch are unknown"),
        ("pqi", {"total_steps": 100}, "total_epochs and steps_per_epoch are unknown"),
        ("sdsnn", {"total_steps": 100}, "total_epochs and steps_per_epoch are unknown"),
        ("lth", {}, "total_epochs and steps_per_epoch are unknown"),  # was ZeroDivisionError
        ("pqi", {"total_epochs": 5}, "steps_per_epoch is unknown"),
    ],
)
def test_a_method_without_the_budget_it_needs_is_refused(method: str, kwargs: dict, message: str) -> None:
    model = TinySNN()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=re.escape(message)):
        sp.METHODS[method](model, None, density=0.3, **kwargs)
    assert model.state_dict().keys() == before.keys()  # refused before any mask was attached


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("rigl", {"total_steps": 100}, "rewiring would never run"),  # update_every 100 >= 75
        ("set", {"total_epochs": 1, "steps_per_epoch": 5}, "rewiring would never run"),
        ("pqi", {"total_epochs": 1, "steps_per_epoch": 5}, "PQ-index rounds would never run"),
        ("rigl", {"total_steps": 1000, "drop_fraction": 0.0}, "drop_fraction = 0 never rewires"),
        ("sdsnn", {"total_epochs": 3, "steps_per_epoch": 5}, "nothing would ever run"),
    ],
)
def test_a_schedule_that_would_never_fire_is_refused(method: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sp.METHODS[method](TinySNN(), None, density=0.3, **kwargs)


def test_the_budget_is_derived_from_any_two_of_its_three_numbers() -> None:
    assert resolve_budget(0, 10, 5) == (50, 10, 5)
    assert resolve_budget(47, 10, 0) == (47, 10, 5)  # a last, shorter epoch
    assert resolve_budget(47, 0, 5) == (47, 10, 5)
    assert resolve_budget(100, 0, 0) == (100, 0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        resolve_budget(100, 10, 3)
    with pytest.raises(ValueError, match="integer >= 0"):
        resolve_budget(-1, 10, 3)
    learner = sp.METHODS["rigl"](TinySNN(), None, density=0.3, steps_per_epoch=100, total_epochs=3)
    assert learner.total_steps == 300 and learner.is_update(100) and not learner.is_update(300)


# -- a forgotten hook is reported --------------------------------------------------------------------------------------
def train(learner: sp.StructureLearner, model: nn.Module, opt: torch.optim.Optimizer, epochs: int, hook: bool) -> None:
    for epoch in range(epochs):
        for x, y in tiny_loader():
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            learner.step()
        if hook:
            learner.on_epoch_end(epoch)


@pytest.mark.parametrize("method", sorted(EPOCH_LEVEL))
def test_a_forgotten_epoch_hook_warns_in_the_next_epoch(method: str) -> None:
    model = TinySNN()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    learner = sp.METHODS[method](model, opt, density=0.3, steps_per_epoch=4, total_epochs=10, **EPOCH_LEVEL[method])
    with pytest.warns(UserWarning, match=r"call learner.on_epoch_end\(epoch\) after every epoch") as record:
        train(learner, model, opt, epochs=3, hook=False)
    assert "step 5 lies in epoch 1" in str(record[0].message)  # at the first step of the second epoch
    assert len([w for w in record if "on_epoch_end" in str(w.message)]) == 1  # once, not at every step


def test_a_step_level_method_needs_no_epoch_hook_and_an_epoch_end_without_steps_warns() -> None:
    model = TinySNN()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    learner = sp.METHODS["rigl"](model, opt, density=0.3, steps_per_epoch=4, total_epochs=50, update_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(learner, model, opt, epochs=2, hook=False)
    assert learner.history  # it rewired without any epoch call
    with pytest.warns(UserWarning, match=r"no learner.step\(\) since the previous epoch end"):
        learner.on_epoch_end(0)
        learner.on_epoch_end(1)
    with pytest.warns(UserWarning, match="beyond total_steps = 8"):
        learner.total_steps = 8
        train(learner, model, opt, epochs=1, hook=False)


# -- masks hold without the optimiser ---------------------------------------------------------------------------------
def masked_copy(model: nn.Module, learner: sp.StructureLearner) -> nn.Module:
    """A plain copy of ``model`` whose weights are explicitly multiplied by the learner's masks."""
    plain = TinySNN()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(("weight_mask", "neuron_mask"))}
    plain.load_state_dict(state)
    with torch.no_grad():
        for layer in learner.layers:
            plain.get_submodule(layer.name).weight.mul_(layer.mask)
    return plain


@pytest.mark.parametrize("given", ["none", "another"])
def test_absent_weights_stay_out_of_the_forward_pass_with_an_optimiser_the_learner_never_saw(given: str) -> None:
    torch.manual_seed(0)
    model = TinySNN()
    opt = torch.optim.Adam(model.parameters(), 0.05)  # moments of synapses that rewiring drops go on moving them
    seen = None if given == "none" else torch.optim.SGD(model.parameters(), 0.1)
    learner = sp.METHODS["rigl"](model, seen, density=0.2, total_steps=40, update_every=2, drop_fraction=0.5)
    x = tiny_loader(1, seed=7)[0][0]
    came_back = 0
    for step, (inp, y) in enumerate(tiny_loader(8) * 2):
        opt.zero_grad()
        loss_fn(model(inp), y).backward()
        opt.step()
        came_back += sum(int((layer.weight[~layer.mask] != 0).sum()) for layer in learner.layers)
        learner.step()  # restores the invariant; the forward pre-hook would too (a step the learner is not told of)
        with torch.no_grad():
            out = model(x)
            expected = masked_copy(model, learner)(x)
        assert torch.equal(out, expected), f"step {step}: the forward pass used absent weights"
        for layer in learner.layers:  # and after the forward, the absent weights are zero again
            assert not bool(layer.weight[~layer.mask].any())
    assert came_back > 0  # the unseen optimiser did move absent weights after its steps: the test can fail
    assert learner.density() == pytest.approx(0.2, abs=0.01)


def test_masks_hold_under_torch_compile_with_an_unseen_optimiser() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    learner = sp.METHODS["static"](model, None, density=0.3)
    compiled = torch.compile(model, backend="eager")  # Dynamo traces the pre-hook; no C++ compiler needed
    x = torch.randn(5, 16)
    with torch.no_grad():
        for layer in learner.layers:
            layer.weight.add_(1.0)  # an in-place write the masks did not see
        reference = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        reference.load_state_dict({k: v for k, v in model.state_dict().items() if "mask" not in k})
        for layer in learner.layers:
            reference.get_submodule(layer.name).weight.mul_(layer.mask)
        out = compiled(x)
        assert torch.equal(out, reference(x))
    for layer in learner.layers:
        assert not bool(layer.weight[~layer.mask].any())


# -- the summary hides no dense layer -------------------------------------------------------------------------------
def test_summary_headline_gives_the_density_over_every_conv_linear_too() -> None:
    torch.manual_seed(0)
    model = TinySNN()  # fc1 16x48 = 768, fc2 48x32 = 1536, out 32x4 = 128 weights
    learner = sp.METHODS["static"](model, None, density=0.2, include=["fc2"])
    masked = learner.layers[0].active()
    headline = learner.summary().splitlines()[0]
    expected_all = (768 + masked + 128) / (768 + 1536 + 128)
    assert f"density {masked / 1536:.4f} over the 1 masked layers" in headline
    assert f"{expected_all:.4f} over all 3 Conv/Linear layers (2 dense)" in headline
