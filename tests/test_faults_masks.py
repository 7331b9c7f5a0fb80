"""Faults found by using the structure learner as a new user would: include/exclude patterns that match nothing,
tied weights, frozen layers, and absent weights seen nonzero between an unknown optimiser's step and the next
forward."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from sparsesnn.metrics import connections
from sparsesnn.sparse import METHODS


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30))
        self.classifier = nn.Linear(30, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _masked(learner) -> set[str]:  # type: ignore[no-untyped-def]
    return {layer.name for layer in learner.layers}


def test_an_exclude_pattern_that_matches_nothing_warns_naming_it_and_the_layers() -> None:
    with pytest.warns(UserWarning, match=r"exclude pattern 'classifer\.\*' matches no layer.*classifier"):
        learner = METHODS["static"](Net(), density=0.5, exclude=["classifer.*"])
    assert "classifier" in _masked(learner)  # what it did: the typo excluded nothing


def test_an_include_pattern_that_matches_nothing_warns() -> None:
    with pytest.warns(UserWarning, match=r"include pattern 'clasifier\.\*' matches no layer.*features\.0"):
        learner = METHODS["static"](Net(), density=0.5, include=["features.*", "clasifier.*"])
    assert _masked(learner) == {"features.0", "features.2"}


def test_patterns_that_match_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        METHODS["static"](Net(), density=0.5, include=["features.*", "classifier"], exclude=["features.2"])


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(12, 12, bias=False)
        self.decoder = nn.Linear(12, 12, bias=False)
        self.decoder.weight = self.encoder.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.encoder(x)))


def test_tied_weights_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'encoder' and 'decoder' share one weight"):
        METHODS["rigl"](Tied(), density=0.5, total_steps=10, update_every=2, dense_first=False)


def test_a_tied_weight_masked_through_one_layer_trains() -> None:
    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = METHODS["rigl"](
        model, opt, density=0.5, total_steps=10, update_every=2, exclude=["decoder"], dense_first=False
    )
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(3, 12)).sum().backward()
        opt.step()
        learner.step()
    mask = learner.layers[0].mask
    assert bool((model.decoder.weight[~mask] == 0).all())


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(10, 16)
        self.head = nn.Linear(16, 4)
        self.backbone.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.backbone(x)))


def test_a_frozen_layer_is_skipped_with_a_warning_naming_it() -> None:
    model = Frozen()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with pytest.warns(UserWarning, match=r"requires_grad=False.*backbone"):
        learner = METHODS["rigl"](model, opt, density=0.5, total_steps=10, update_every=2, dense_first=False)
    assert _masked(learner) == {"head"}
    assert bool((model.backbone.weight != 0).all())  # left as it is


def test_only_frozen_layers_is_an_error_naming_them() -> None:
    model = Frozen()
    with pytest.raises(ValueError, match="backbone"), pytest.warns(UserWarning, match="backbone"):
        METHODS["static"](model, density=0.5, include=["backbone"])


def test_absent_weights_stay_zero_after_a_step_of_an_optimiser_the_learner_was_not_given() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):  # dense warm-up: Adam's moments are nonzero everywhere
        opt.zero_grad()
        model(torch.randn(4, 20)).sum().backward()
        opt.step()
    learner = METHODS["static"](model, density=0.5)  # the optimiser not given
    true_density = learner.density()
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 20)).sum().backward()
        opt.step()  # Adam's stale moments move absent weights
        # before learner.step(): connections counts the masks, not the raw weights
        assert connections(model)["density"] == pytest.approx(true_density)
        learner.step()
        for layer in learner.layers:  # after every step the learner sees, absent weights are zero again
            assert bool((layer.weight[~layer.mask] == 0).all())
    opt.zero_grad()
    model(torch.randn(4, 20)).sum().backward()
    opt.step()
    state = model.state_dict()  # the saved weights keep absent synapses at zero
    for layer in learner.layers:
        assert bool((state[f"{layer.name}.weight"][~layer.mask] == 0).all())
