"""One typed settings model per method (issue 24): the learner, the config and ``sparsesnn info`` share it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sparsesnn.cli import main
from sparsesnn.core.errors import ConfigError
from sparsesnn.data import DATASETS
from sparsesnn.models import MODELS
from sparsesnn.neuron.kinds import NEURONS
from sparsesnn.sparse import METHODS
from sparsesnn.sparse.settings import SHARED_KEYS, LearnerSettings
from sparsesnn.train.config import load_config_text
from tests.conftest import tiny_toml

REPO = Path(__file__).resolve().parents[1]


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            "{ update_every = -3 }",
            r"sparse\.params: method 'rigl': update_every = -3: Input should be greater than or "
            r"equal to 1",
        ),
        ("{ warp = 3 }", r"method 'rigl': warp: not a setting \(allowed: drop_fraction, grow, grow_init"),
        ('{ schedule = "sine" }', r"schedule = 'sine': Input should be 'constant', 'cosine' or 'linear'"),
        ('{ drop_fraction = "0.3" }', r"drop_fraction = '0\.3': Input should be a valid number"),
        ("{ density = 0.5 }", r"density: set it in \[sparse\] \(or it comes from the run\), not in \[sparse\.params\]"),
    ],
)
def test_method_params_are_refused_when_the_file_is_read(params: str, message: str) -> None:
    toml = tiny_toml(params=params)
    with pytest.raises(ConfigError, match=message):
        load_config_text(toml)


def test_a_bad_method_setting_is_reported_before_any_dataset_is_opened(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    text = tiny_toml(params="{ update_every = -3 }").replace('name = "digits"', 'name = "mnist"\nroot = "nowhere"')
    config.write_text(text)
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "update_every = -3" in err and "nowhere" not in err  # the settings, not the missing data
    assert not (tmp_path / "run").exists()


PLUGINS = [
    *(("method", n, METHODS[n].Settings) for n in METHODS.names()),
    *(("model", n, MODELS[n].Settings) for n in MODELS.names()),
    *(("dataset", n, DATASETS[n].Settings) for n in DATASETS.names()),
    *(("neuron", n, NEURONS[n].Settings) for n in NEURONS.names() if n in ("lif", "plif")),
]


@pytest.mark.parametrize(("kind", "name", "settings"), PLUGINS, ids=[f"{k}-{n}" for k, n, _ in PLUGINS])
def test_info_lists_every_setting_with_type_default_and_meaning(kind: str, name: str, settings, capsys) -> None:
    assert main(["info", name]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"{kind} {name!r}: ") and len(table.splitlines()[0]) > len(f"{kind} {name!r}: ") + 10
    for key, field in settings.model_fields.items():
        row = next((line for line in table.splitlines() if line.startswith(f"| {key} |")), None)
        assert row is not None, key
        cells = row.split(" | ")
        assert len(cells) == 4, row  # setting, type, default, meaning: no stray "|" in a cell
        assert cells[2] == repr(field.get_default()) and field.description and cells[3] == field.description + " |"
    if kind == "method":
        own = set(settings.model_fields) - SHARED_KEYS
        params_part = table.split("shared ([sparse] and the run)")[0]
        assert all(f"| {key} |" in params_part for key in own)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[data]\nname = "nmnist"\nparams = { frames = 8 }', r"data\.params: dataset 'nmnist': frames: not a setting"),
        ('[data]\nname = "nmnist"\nparams = { n_frames = 0 }', r"n_frames = 0: Input should be greater than or equal"),
        ('[data]\nname = "cifar10_dvs"\nparams = { layout = "x" }', r"layout = 'x': Input should be 'tonic'"),
        ('[data]\nname = "digits"\nparams = { test_fraction = 1.5 }', r"test_fraction = 1\.5: Input should be less"),
        ('[model]\nname = "convnet"\nparams = { depth = 3 }', r"model\.params: model 'convnet': depth: not a setting"),
        ('[model]\nname = "vgg16"\nparams = { pool = "min" }', r"pool = 'min': Input should be 'max' or 'avg'"),
        ('[model]\nname = "resnet19"\nparams = { input_size = 2 }', r"input_size 2 is smaller than the total stride 4"),
    ],
)
def test_dataset_and_model_params_are_refused_when_the_file_is_read(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(section)  # no dataset root is given, none is opened


def test_an_unknown_dataset_setting_is_refused_before_the_data_is_read(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text(tiny_toml().replace('name = "digits"', 'name = "nmnist"\nroot = "nowhere"\nparams = { fps = 3 }'))
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "fps: not a setting" in err and "nowhere" not in err


def test_keywords_and_a_settings_object_build_the_same_learner() -> None:
    rigl = METHODS["rigl"]
    by_keywords = rigl(net(), None, density=0.3, update_every=5, total_steps=50, include=["1"])
    settings = rigl.Settings(density=0.3, update_every=5, total_steps=50, include=("1",))
    by_object = rigl(net(), None, settings=settings)
    assert by_keywords.settings == by_object.settings == settings
    assert [layer.name for layer in by_object.layers] == ["1"]
    assert torch.equal(by_keywords.layers[0].mask, by_object.layers[0].mask)
    with pytest.raises(TypeError, match="not both"):
        rigl(net(), None, settings=settings, density=0.5)
    with pytest.raises(TypeError, match="settings must be a RigLSettings"):
        rigl(net(), None, settings=LearnerSettings(density=0.3))
    with pytest.raises(ValueError, match=r"rigl: update_every = 0: Input should be greater than or equal to 1"):
        rigl(net(), None, update_every=0, total_steps=50)


def test_settings_are_frozen_and_each_method_keeps_its_defaults() -> None:
    settings = METHODS["set"].Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.update_every = 3  # type: ignore[misc]
    assert (settings.update_unit, settings.distribution, settings.prune) == ("epochs", "er", "set")
    assert METHODS["rigl"].Settings().dense_first and METHODS["esl"].Settings().dense_last
    assert METHODS["pqi"].Settings().density == 0.5 and "update_every" not in METHODS["pqi"].Settings.model_fields


def test_no_plugin_settings_are_read_from_signatures() -> None:
    for path in (REPO / "sparsesnn").rglob("*.py"):
        assert "inspect.signature" not in path.read_text(), path
