"""Smoke tests of bench/rewiring_overhead.py and bench/compact_speed.py in quick mode: they run and the JSON holds."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsesnn.deploy.event_layers import numba_available
from tests.conftest import load_bench, tiny_sdsnn_toml, tiny_toml


def _check_summary(s: dict[str, object], rounds: int) -> None:
    """A summary holds one value per round, and its median, min and max are those of the values."""
    per_round = s["per_round"]
    assert isinstance(per_round, list) and len(per_round) == rounds
    assert (s["median"], s["min"], s["max"]) == (statistics.median(per_round), min(per_round), max(per_round))


def _per_round(s: dict[str, object]) -> list[float]:
    return s["per_round"]  # type: ignore[return-value]


def _printed_json(printed: str) -> dict[str, object]:
    """stdout is the JSON object first, then the Markdown summary."""
    return json.loads(printed[: printed.index("\n\n## ")])


@pytest.mark.slow
def test_rewiring_overhead_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("rewiring_overhead")
    out = tmp_path / "r.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())

    cfg = result["config"]
    rounds, steps, every, batch = cfg["rounds"], cfg["steps_per_window"], cfg["update_every"], cfg["batch"]
    assert set(result["variants"]) == set(bench.VARIANTS) == {"dense", "static", "rigl", "set"}
    windows = {name: _per_round(v["window_s"]) for name, v in result["variants"].items()}
    for name, v in result["variants"].items():
        _check_summary(v["window_s"], rounds)
        assert all(w > 0 for w in windows[name]), name
        # the derived figures are those of the measured windows
        assert _per_round(v["step_ms"]) == pytest.approx([w / steps * 1e3 for w in windows[name]]), name
        assert _per_round(v["samples_per_s"]) == pytest.approx([steps * batch / w for w in windows[name]]), name
        if name == "dense":
            assert "overhead_vs_dense" not in v and "learner_step_ms" not in v
            continue
        _check_summary(v["overhead_vs_dense"], rounds)
        expected_overhead = [(w - d) / d for w, d in zip(windows[name], windows["dense"], strict=True)]
        assert _per_round(v["overhead_vs_dense"]) == pytest.approx(expected_overhead), name
        _check_summary(v["learner_step_fraction"], rounds)
        assert all(0 < f < 1 for f in v["learner_step_fraction"]["per_round"]), name
        assert v["density"] == pytest.approx(0.1, abs=1e-3) and v["density_end"] == pytest.approx(v["density"])
        expected = 0 if name == "static" else steps // every
        assert v["rewires_per_window"] == [expected] * rounds, name
    for name in ("rigl", "set"):
        ratio = result["ratios"][f"{name}_minus_static_over_dense"]
        _check_summary(ratio, rounds)
        expected = [(w - s) / d for w, s, d in zip(windows[name], windows["static"], windows["dense"], strict=True)]
        assert _per_round(ratio) == pytest.approx(expected), name
        assert result["variants"][name]["learner_step_ms_when_rewiring"]["median"] > 0
        iso = result["isolated_rewire"][name]
        assert len(iso["rewire_ms"]["per_round"]) == cfg["rewire_repeats"] == 3
        assert iso["rewire_ms"]["median"] > 0 and iso["fraction_of_one_step"] > 0
        assert any(layer["grown"] > 0 for layer in iso["last_rewire_per_layer"].values())
    assert result["isolated_rewire"]["dense_step_ms"] > 0
    assert set(result["verdict"]) >= {"target", "rigl_learner_step_fraction_below_target"}
    assert result["compile"]["graphs_compiled_during_timed_rounds"] == 0
    assert result["machine"]["threads"] == 2
    assert isinstance(result["machine"]["malloc_tuned"], bool)

    printed = capsys.readouterr().out
    assert _printed_json(printed) == result
    assert "| rigl |" in printed and "One rewire in isolation" in printed


@pytest.mark.slow
def test_compact_speed_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("compact_speed")
    out = tmp_path / "c.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())

    cfg = result["config"]
    rounds = cfg["rounds"]
    names = ["dense", "masked-50", "compact-50", "masked-10", "compact-10"]
    assert list(result["variants"]) == names
    variants = result["variants"]
    dense_sps = _per_round(variants["dense"]["samples_per_s"])
    for name, v in variants.items():
        _check_summary(v["samples_per_s"], rounds)
        _check_summary(v["over_dense_samples_per_s"], rounds)
        sps = _per_round(v["samples_per_s"])
        assert all(s > 0 for s in sps), name
        expected = [a / b for a, b in zip(sps, dense_sps, strict=True)]
        assert _per_round(v["over_dense_samples_per_s"]) == pytest.approx(expected), name
    dense_params = variants["dense"]["parameters"]
    assert variants["masked-50"]["parameters"] == variants["masked-10"]["parameters"] == dense_params
    assert dense_params > variants["compact-50"]["parameters"] > variants["compact-10"]["parameters"]
    assert variants["masked-10"]["nonzero_parameters"] < variants["masked-50"]["nonzero_parameters"]
    assert variants["compact-10"]["layers"]["classifier.0.0.0"] == [51, 294]  # 51 of 512 units, 6 of 64 channels

    for tag in ("50", "10"):
        for kind in ("compact", "masked"):
            ratio = result["ratios"][f"{kind}-{tag}_over_dense_samples_per_s"]
            _check_summary(ratio, rounds)
            assert ratio == variants[f"{kind}-{tag}"]["over_dense_samples_per_s"]
        c = result["compaction"][tag]
        assert c["report"]["kept"] == {} and len(c["report"]["removed"]) == 3
        assert c["report"]["params_after"] == variants[f"compact-{tag}"]["parameters"]
        assert c["max_abs_diff_timed_batch"] <= 1e-6 and c["max_abs_diff_other_batch"] <= 1e-6
        assert all(rate > 0 for rate in c["firing_rates_masked"].values()), tag  # the comparison is not vacuous
    assert all(rate > 0 for rate in result["firing_rates_dense"].values())
    assert result["compile"]["graphs_compiled_during_timed_rounds"] == 0
    assert result["machine"]["threads"] == 2

    printed = capsys.readouterr().out
    assert _printed_json(printed) == result
    assert "| compact-10 |" in printed and "compact / dense" in printed


@pytest.mark.parametrize(
    ("epochs", "n", "tail", "stop", "final"),
    [
        (15, 2, None, None, False),
        (12, 1, None, None, False),
        (15, 2, 0.03, None, False),
        (15, 2, None, 0.8, False),
        (15, 2, None, None, True),
    ],
)
@pytest.mark.filterwarnings("ignore:sdsnn. on_epoch_end.*with no learner.step:UserWarning")  # epochs alone
def test_sdsnn_rate_replay_matches_the_learner(
    epochs: int, n: int, tail: float | None, stop: float | None, final: bool
) -> None:
    """The replay's pruned count equals what the SDSNN learner itself prunes, epoch by epoch, on a tiny FC net."""
    import torch
    from torch import nn

    from sparsesnn.sparse.methods.sdsnn import SDSNN

    bench = load_bench("sdsnn_rate_replay")
    hidden, classes = 64, 10
    replayed = bench.replay(hidden, classes, epochs, n, last_tail_increment=tail, stop_at=stop, final_change=final)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, hidden), nn.Linear(hidden, classes))
    learner = SDSNN(
        model,
        density=1.0,
        N=n,
        total_epochs=epochs,
        steps_per_epoch=1,  # a replay of the epoch hook alone: no optimiser steps
        regeneration=False,
        constraint=False,
        last_tail_increment=tail,
        stop_at=stop,
        final_change=final,
    )
    name = learner.last_layer
    by_epoch = {}
    for epoch in range(epochs):
        learner.on_epoch_end(epoch)
        by_epoch[epoch + 1] = int((~learner.alive[name]).sum())
    assert [t["pruned"] for t in replayed["trace"]] == [by_epoch[t["epoch"]] for t in replayed["trace"]]
    assert replayed["pruned"] == by_epoch[epochs] > 0
    # 1-based epoch of the last pruning: the last but one (the last with final_change), or before stop_at
    last = (epochs if final else epochs - 1) if stop is None else math.floor(stop * epochs) - 1
    assert replayed["pruning_epochs"] == last - 2 * n - 1
    assert replayed["trace"][-1]["epoch"] == last


def test_sdsnn_rate_replay_code_row_is_the_codes_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("sdsnn_rate_replay")
    result = bench.main(["--hidden", "512", "--classes", "10", "--run", "15:2"])
    code = result["rows"]["code (600 epochs, N = 18)"]
    assert code["N"] == 18 and code["epochs"] == 600 and code["last_tail_increment"] == pytest.approx(0.0005)
    assert code["pruning_epochs"] == 600 - 37
    pruned = [t["pruned"] for t in code["trace"]]
    assert pruned == sorted(pruned) and 0 < pruned[-1] < 512
    assert "| 15 epochs, N = 2 |" in capsys.readouterr().out


def test_sdsnn_rate_replay_takes_a_tail_increment_of_ones_own(capsys: pytest.CaptureFixture[str]) -> None:
    """``--run E:N:T`` replays with ``last_tail_increment = T``; a larger late rate prunes more than the code's."""
    bench = load_bench("sdsnn_rate_replay")
    result = bench.main(["--run", "30:3", "--run", "30:3:0.03"])
    faithful, ours = result["rows"]["30 epochs, N = 3"], result["rows"]["30 epochs, N = 3, tail 0.03 (ours)"]
    assert ours["last_tail_increment"] == pytest.approx(0.03) and faithful["last_tail_increment"] < 0.03
    assert ours["pruned"] > faithful["pruned"]
    assert "| 30 epochs, N = 3, tail 0.03 (ours) |" in capsys.readouterr().out
    assert faithful["pruning_epochs"] == 30 - 8  # epochs 8-29 (1-based): none at the end of the last
    stopped = bench.main(["--run", "30:3::0.85"])["rows"]["30 epochs, N = 3, stop_at 0.85 (ours)"]
    assert stopped["pruning_epochs"] == 24 - 7 and stopped["last_tail_increment"] > faithful["last_tail_increment"]
    # the code's last pruning too: one more pruning epoch, the same code total spread one increment wider
    old = bench.main(["--run", "30:3", "--final-change"])["rows"]["30 epochs, N = 3, last epoch pruned (final_change)"]
    assert old["pruning_epochs"] == faithful["pruning_epochs"] + 1
    assert old["last_tail_increment"] < faithful["last_tail_increment"]
    for bad in ("30:3:x", "30:3:1.5", "30:3:0.1:2", "30:3:0.1:0.5:1", "4:1"):
        with pytest.raises(SystemExit):
            bench.main(["--run", bad])
    with pytest.raises(SystemExit):
        bench.main(["--run", "30:3::0.85", "--final-change"])


def test_sdsnn_ghost_probe_runs_on_a_finished_run_and_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparsesnn.train.config import load_config_text
    from sparsesnn.train.trainer import Trainer

    toml = tiny_sdsnn_toml()
    run = tmp_path / "run"
    Trainer(load_config_text(toml), run, quiet=True).fit()
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.iterdir()}
    bench = load_bench("sdsnn_ghost_probe")
    out = tmp_path / "probe.json"
    bench.main([str(run), "--steps", "3", "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    with_ghosts, without = result["variants"]
    assert with_ghosts["ghosts"] and with_ghosts["armed"]  # the run prunes, so its ghosts arm on the first step
    assert not without["ghosts"] and not without["armed"]
    assert without["working_test_acc"] == without["structure_test_acc"]  # nothing to remove
    for r in (with_ghosts, without):
        assert 0.0 <= r["working_test_acc"] <= 1.0 and 0.0 <= r["structure_test_acc"] <= 1.0
    assert "| with ghosts | True |" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.iterdir()} == before


def test_sdsnn_ghost_probe_refuses_a_run_of_another_method(tmp_path: Path) -> None:
    from sparsesnn.train.config import load_config_text
    from sparsesnn.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(load_config_text(tiny_toml("rigl").replace("epochs = 3", "epochs = 1")), run, quiet=True).fit()
    with pytest.raises(SystemExit, match="not an SD-SNN run"):
        load_bench("sdsnn_ghost_probe").main([str(run), "--steps", "1"])


def test_loader_speed_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/loader_speed.py --quick: every data path and loader is measured, the ratios follow from the step times,
    and pinning is reported as skipped without CUDA."""
    from tests.conftest import DATA

    if not (DATA / "nmnist").is_dir() or not (DATA / "dvs_gesture" / "slayer_bs2_1450ms").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    bench = load_bench("loader_speed")
    out = tmp_path / "l.json"
    bench.main(["--quick", "--data", str(DATA), "--cifar-step-ms", "12", "--json", str(out)])
    result = json.loads(out.read_text())
    cfg = result["config"]
    rounds = cfg["rounds"]
    shapes = {"cifar10": [3, 32, 32], "nmnist": [10, 2, 34, 34], "dvs48": [10, 2, 48, 48]}
    assert list(result["paths"]) == list(shapes)
    for path, r in result["paths"].items():
        assert r["sample"] == {"shape": shapes[path], "dtype": "float32"}
        assert r["step_ms"] == (12.0 if path == "cifar10" else 50.0)
        names = ["0", "0+thread", "1", "2"] if path == "cifar10" else ["0", "1", "2"]
        if result["device"] != "cpu":
            names = [n + p for n in names for p in ("", " pinned")]
        assert list(r["variants"]) == names, path
        for name, v in r["variants"].items():
            _check_summary(v["ms_per_batch"], rounds)
            _check_summary(v["cpu_ms_per_batch"], rounds)
            assert all(ms > 0 for ms in v["ms_per_batch"]["per_round"]), (path, name)
            ratios = [r["step_ms"] / ms for ms in v["ms_per_batch"]["per_round"]]
            assert v["step_over_batch"]["per_round"] == pytest.approx(ratios)
        assert isinstance(r["workers_for_2x_on_idle_cores"], int) and r["workers_for_2x_on_idle_cores"] >= 1
        if path != "cifar10":
            assert r["cache"]["warm_hits"] == r["cache"]["samples"] == r["samples"]  # timed on a warm cache
    if result["device"] == "cpu":
        assert result["pin_memory"].startswith("skipped")
    printed = capsys.readouterr().out
    assert _printed_json(printed) == result
    assert "| cifar10 (3x32x32) | 0+thread |" in printed and "| dvs48 (10x2x48x48) | 2 |" in printed


def test_deploy_speed_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/deploy_speed.py --quick: every group times the dense conv and the event conv at each mask, the speed-ups
    follow from the per-round times, the SOP count is the spikes times the surviving fan-out, and the block mask takes
    the block layout."""
    bench = load_bench("deploy_speed")
    assert bench.main(["--quick"]) == 0
    result = _printed_json(capsys.readouterr().out)
    groups = result["cells"]
    assert [(g["rate"], g["batch"], g["threads"]) for g in groups] == [(0.05, 1, 1), (0.3, 1, 1)]
    for g in groups:
        assert set(g["ms"]) == {"dense conv", "event 1.00 dense", "event 0.10 scattered", "event 0.10 blocks"}
        for name, s in g["ms"].items():
            _check_summary(s, result["config"]["rounds"])
            if name != "dense conv":
                assert g["vs_dense_conv"][name] == pytest.approx(g["ms"]["dense conv"]["median"] / s["median"])
                full = g["ms"]["event 1.00 dense"]["median"]
                assert g["vs_event_at_density_1"][name] == pytest.approx(full / s["median"])
        # SOPs per sample ~ spikes x mean fan-out: rate * 32*14*14*T inputs, density * 64*9 synapses each
        for name, density in (("event 1.00 dense", 1.0), ("event 0.10 scattered", 0.1), ("event 0.10 blocks", 0.1)):
            expected = g["measured_input_rate"] * 32 * 14 * 14 * 4 * density * 64 * 9
            assert g["sops_per_sample"][name] == pytest.approx(expected, rel=0.3)
        assert g["layout"] == {
            "event 1.00 dense": "rows",
            "event 0.10 scattered": "rows",
            "event 0.10 blocks": "blocks",
        }
    assert groups[0]["sops_over_macs"]["event 0.10 blocks"] < groups[1]["sops_over_macs"]["event 0.10 blocks"]
    assert result["targets"] == {}  # the quick map has no 15 % rate


def test_deploy_speed_on_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/deploy_speed.py --run: a trained sparse convnet, its four variants timed, the deployed model's
    predictions checked on the whole test split, its SOPs counted."""
    from sparsesnn.cli import main as cli
    from tests.conftest import tiny_convnet_toml

    config = tmp_path / "c.toml"
    config.write_text(tiny_convnet_toml())
    run = tmp_path / "run"
    assert cli(["train", "--quiet", "--config", str(config), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    bench = load_bench("deploy_speed")
    assert bench.main(["--quick", "--no-map", "--run", f"tiny={run}"]) == 0
    printed = capsys.readouterr().out
    result = _printed_json(printed)
    assert result["cells"] == []
    (r,) = result["runs"]
    assert r["name"] == "tiny" and r["test_samples"] == 128 and r["test_acc_dense"] > 0.8
    assert 0.4 < r["weight_density"] < 0.9 and r["sops_per_sample"] > 0
    (c,) = r["cells"]
    assert (c["threads"], c["batch"]) == (1, 1)
    assert c["identical_predictions"] == 128 and c["test_acc_deployed"] == r["test_acc_dense"]
    for name, s in c["ms_per_sample"].items():
        _check_summary(s, result["config"]["rounds"])
        assert c["speedup_vs_dense"][name] == pytest.approx(c["ms_per_sample"]["dense"]["median"] / s["median"])
    assert set(c["event_layers"]) <= set(c["deploy"]["layers"])
    assert "| tiny | 1 | 1 |" in printed


def test_every_sparsity_pays_row_is_a_valid_recipe(tmp_path: Path) -> None:
    """Each row's recipe with its overrides (the teacher row's directory filled in) loads as a valid config."""
    from sparsesnn.train.config import load_config

    bench = load_bench("sparsity_pays")
    for rows, epochs in bench.DATASETS.values():
        for name, (recipe, overrides) in rows.items():
            sets = [s.replace("{out}", str(tmp_path)) for s in overrides] + [f"run.epochs={epochs}"]
            config = load_config(bench.REPO / recipe, sets)
            assert config.run.epochs == epochs, name
    recipe, overrides = bench.ROWS["evokd10_macs_block"]
    kd = load_config(bench.REPO / recipe, [s.replace("{out}", str(tmp_path)) for s in overrides])
    assert kd.distill is not None and kd.distill.teacher_run == f"{tmp_path}/dense"
    assert kd.sparse.granularity == "block" and kd.sparse.budget == "macs"


def test_sparsity_pays_measures_finished_rows_round_robin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/sparsity_pays.py measure: two tiny trained convnets as the "dense" and "esl10_macs" rows, deployed,
    checked on the whole test split, timed round robin; the rows not trained are listed, the plot is written."""
    from sparsesnn.cli import main as cli
    from tests.conftest import tiny_convnet_toml

    out = tmp_path / "rows"
    dense = tiny_convnet_toml().replace('method = "rigl"', 'method = "dense"').replace("density = 0.5", "density = 1.0")
    sparse = tiny_convnet_toml().replace("[sparse]\n", '[sparse]\nbudget = "macs"\n')
    for row, toml in (("dense", dense.replace("params = { update_every = 4 }", "params = {}")), ("esl10_macs", sparse)):
        config = tmp_path / f"{row}.toml"
        config.write_text(toml)
        assert cli(["train", "--quiet", "--config", str(config), "--run-dir", str(out / row)]) == 0
    capsys.readouterr()
    bench = load_bench("sparsity_pays")
    png = tmp_path / "pareto.png"
    args = ["measure", "--out", str(out), "--cells", "1x1,1x64", "--rounds", "2", "--samples", "2", "--png", str(png)]
    assert bench.main([*args, "--unfused"]) == 0
    printed = capsys.readouterr().out
    result = _printed_json(printed)
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"dense", "esl10_macs"} and "esl10_params" in result["not_trained"]
    assert rows["esl10_macs"]["mac_density"] == pytest.approx(0.5, abs=0.02)  # the MAC budget the run held
    assert rows["dense"]["weight_density"] == 1.0 > rows["esl10_macs"]["weight_density"]
    for r in rows.values():
        assert [(c["threads"], c["batch"]) for c in r["cells"]] == [(1, 1), (1, 64)]
        for c in r["cells"]:
            assert c["identical_predictions"] == r["test_samples"] == 128
            _check_summary(c["ms_per_sample"], 2)
            assert c["vs"]["dense"] == pytest.approx(
                next(d for d in rows["dense"]["cells"] if d["batch"] == c["batch"])["ms_per_sample"]["median"]
                / c["ms_per_sample"]["median"]
            )
    fused = [c for r in rows.values() for c in r["cells"] if c["fused"]]  # the tiny convnet's conv-LIF-pool blocks
    assert fused and all(c["fusion_speedup"] > 0 for c in fused) and "Fused blocks against" in printed
    for c in fused:
        _check_summary(c["unfused_ms_per_sample"], 2)
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        bench.main(["train", "--rows", "dense,nonsense", "--out", str(out)])


def _firing_convnet() -> torch.nn.Module:
    """The MNIST convnet's layout at 8x8 with a hidden FC, weights scaled so that spikes reach the readout."""
    from sparsesnn.models import build_model
    from sparsesnn.neuron.kinds import NeuronSpec

    torch.manual_seed(0)
    model = build_model("convnet", input_size=8, channels=(8, 16), hidden=24, neuron=NeuronSpec(backend="eager")).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(4.0)
    return model


@pytest.mark.skipif(not numba_available(), reason="the deployed kernels are compiled (numba)")
@pytest.mark.parametrize(("conv", "linear"), [("rows", "columns"), ("blocks", "blocks"), ("direct", "csc")])
def test_glue_ceiling_direct_path_equals_the_deployed_convnet(
    conv: str, linear: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/glue_ceiling.py: the kernels called back to back give the deployed convnet's outputs bit for bit, for
    each layout of its event convs and linears, on step-invariant input and input that varies over time, with spikes
    all the way to the readout; a model of another structure is refused by name."""
    from sparsesnn.deploy import deploy
    from sparsesnn.deploy.event_layers import EventConv2d
    from sparsesnn.neuron.layers import DirectEncoder

    bench = load_bench("glue_ceiling")
    g = torch.Generator().manual_seed(5)
    example = DirectEncoder(4)(torch.rand(2, 1, 8, 8, generator=g))
    model = _firing_convnet()
    with torch.no_grad():
        _d, forced = deploy(model, example, backend="numba", force=True, repeats=1)
        kinds = {name: type(m) for name, m in _d.named_modules()}
        choices = {n: conv if kinds[n] is EventConv2d else linear for n, c in forced.layers.items() if c.event}
        deployed, report = deploy(model, example, backend="numba", choices=choices, repeats=1)
        assert {c.layout for c in report.layers.values() if c.event} == {conv, linear} and len(report.fused) == 4
        direct = bench.direct_path(deployed)
        varying = (torch.rand(4, 3, 1, 8, 8, generator=g) > 0.5).float()
        for x in (example, DirectEncoder(4)(torch.rand(3, 1, 8, 8, generator=g)), varying):
            y = deployed(x)
            with monkeypatch.context() as patch:  # fresh buffers hold NaN: nothing left unwritten passes by chance
                patch.setattr(np, "empty", lambda shape, dtype=float: np.full(shape, np.nan, dtype))
                got = direct(x)
            assert torch.equal(got, y) and y.std() > 0
            assert deployed.classifier[0](deployed.features(x).flatten(2)).sum() > 0  # the hidden FC fires
        with pytest.raises(ValueError, match="not a deployed ConvNet"):
            bench.direct_path(torch.nn.Sequential(torch.nn.Linear(2, 2)))
