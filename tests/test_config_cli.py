"""Config validation (errors name key, value and what is allowed) and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsesnn.cli import main
from sparsesnn.core.errors import ConfigError
from sparsesnn.train.config import apply_override, config_keys, load_config, load_config_text
from tests.conftest import tiny_toml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "toml,expected",
    [
        ("[sparse]\ndensity = 1.5", r"sparse\.density = 1\.5: Input should be less than or equal to 1"),
        ("[optim]\nlr = -0.1", r"optim\.lr = -0\.1: Input should be greater than 0"),
        ("[optim]\nlearning_rate = 0.1", r"optim\.learning_rate: unknown key"),
        ("[optimizer]\nlr = 0.1", r"optimizer: unknown key"),
        ('[optim]\nname = "rmsprop"', r"optim\.name = 'rmsprop': Input should be 'sgd', 'adam' or 'adamw'"),
        ('[run]\nepochs = "ten"', r"run\.epochs = 'ten': Input should be a valid integer"),
        ('[model]\nname = "resnet50"', r"model\.name = 'resnet50': unknown model; choose one of \[.*'convnet'"),
        ('[data]\nname = "imagenet"', r"data\.name = 'imagenet': unknown dataset; choose one of \[.*'mnist'"),
        ('[sparse]\nmethod = "magic"', r"sparse\.method = 'magic': unknown method; choose one of \[.*'rigl'"),
        ("[neuron]\ntau = 0.5", r"neuron\.tau = 0\.5: Input should be greater than 1"),
        ("[neuron]\nv_reset = 2.0", r"v_reset \(2\.0\) must be below v_threshold \(1\.0\)"),
        ('[run]\ndevice = "tpu"', r"run\.device = 'tpu': must be 'auto', 'cpu'"),
        ("[run]\nepochs = 2\n[schedule]\nwarmup_epochs = 3", r"warmup_epochs \(3\.0\) must be below run\.epochs"),
        ("[run\n", r"not valid TOML"),
        # numbers are strict: a quoted number, a float for an integer or a boolean for a number is refused
        ('[sparse]\ndensity = "0.2"', r"sparse\.density = '0\.2': Input should be a valid number"),
        ("[run]\nepochs = 2.0", r"run\.epochs = 2\.0: Input should be a valid integer"),
        ("[data]\nbatch_size = true", r"data\.batch_size = True: Input should be a valid integer"),
        ('[optim]\nbetas = [0.9, "0.99"]', r"optim\.betas\.1 = '0\.99': Input should be a valid number"),
    ],
)
def test_config_errors_name_key_value_and_allowed(toml, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config_text(toml)


def test_strict_numbers_still_take_toml_numbers_and_integers_for_floats():
    config = load_config_text(
        "[sparse]\ndensity = 1\n[optim]\nlr = 1\nbetas = [0.5, 0.9]", ["schedule.warmup_epochs=0"]
    )
    assert (config.sparse.density, config.optim.lr, config.optim.betas) == (1.0, 1.0, (0.5, 0.9))
    assert isinstance(config.sparse.density, float) and config.schedule.warmup_epochs == 0.0


def test_overrides_parse_toml_values():
    data: dict = {}
    apply_override(data, "sparse.density=0.05")
    apply_override(data, "model.params.channels=[8, 16]")
    apply_override(data, "run.name=my_run")  # a bare word stays a string
    apply_override(data, "run.deterministic=false")
    assert data == {
        "sparse": {"density": 0.05},
        "model": {"params": {"channels": [8, 16]}},
        "run": {"name": "my_run", "deterministic": False},
    }
    with pytest.raises(ConfigError, match="key=value"):
        apply_override(data, "sparse.density")
    with pytest.raises(ConfigError, match="is a value, not a table"):
        apply_override(data, "run.name.x=1")


def test_every_recipe_in_configs_validates():
    recipes = sorted((REPO / "configs").glob("*.toml"))
    assert recipes
    for path in recipes:
        load_config(path)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sparse]\ndensity = 1.5\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.toml.*sparse\.density = 1\.5"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_config_keys_listing():
    keys = config_keys()
    assert any(k.startswith("sparse.density ") for k in keys)
    assert any(k.startswith("neuron.surrogate ") for k in keys)


def test_cli_train_eval_info(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny_toml())
    rd = tmp_path / "run"
    assert main(["train", "--quiet", "--config", str(cfg), "--run-dir", str(rd), "--set", "sparse.density=0.2"]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "connection density 20.0" in out
    assert main(["eval", "--quiet", str(rd)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["density"] == pytest.approx(0.2, abs=2e-3) and 0.0 <= result["test_acc"] <= 1.0
    summary = json.loads((rd / "summary.json").read_text())
    assert result["test_acc"] == pytest.approx(summary["final_test_acc"])
    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    for name in ("convnet", "resnet19", "mnist", "digits", "rigl", "gmp"):
        assert name in listing


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny_toml())
    assert main(["train", "--config", str(cfg), "--set", "sparse.density=1.5"]) == 2
    err = capsys.readouterr().err
    assert "sparse.density = 1.5" in err and "less than or equal to 1" in err
    assert main(["train", "--config", str(cfg), "--set", "sparse.params.warp=3"]) == 2
    assert "sparse.params: method 'rigl': warp: not a setting (allowed: drop_fraction," in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--set", "model.params.depth=3"]) == 2
    assert "model.params: model 'mlp': depth: not a setting (allowed: hidden, in_channels" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_missing_dataset_file_names_it(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny_toml().replace('name = "digits"', f'name = "mnist"\nroot = "{tmp_path}"'))
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "train-images" in err
