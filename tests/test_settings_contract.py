"""One typed settings model per method (issue 24): the learner, the config and ``sparsesnn info`` share it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sparsesnn.cli import main
from sparsesnn.config import load_config_text
from sparsesnn.errors import ConfigError
from sparsesnn.sparse import METHODS
from sparsesnn.sparse.settings import SHARED_KEYS, LearnerSettings
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
        ('{ schedule = "sine" }', r"schedule = 'sine': unknown schedule; choose one of \['constant', 'cosine'"),
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


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_info_lists_every_setting_with_type_default_and_meaning(method: str, capsys) -> None:
    assert main(["info", method]) == 0
    table = capsys.readouterr().out
    settings = METHODS[method].Settings
    for name, field in settings.model_fields.items():
        row = next((line for line in table.splitlines() if line.startswith(f"| {name} |")), None)
        assert row is not None, name
        assert repr(field.get_default()) in row and field.description and field.description in row, name
    own = set(settings.model_fields) - SHARED_KEYS
    params_part = table.split("shared ([sparse] and the run)")[0]
    assert all(f"| {name} |" in params_part for name in own)


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
    for path in [*(REPO / "sparsesnn" / "sparse").rglob("*.py"), REPO / "sparsesnn" / "sweep.py"]:
        assert "inspect.signature" not in path.read_text(), path
