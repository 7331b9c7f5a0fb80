"""Sweeps (grid, names, up-front validation, resume, failures) and the report (files, numbers, reference points,
a real browser), end to end on the embedded digits with a tiny budget."""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sparsesnn.cli import main
from sparsesnn.core.errors import ConfigError
from sparsesnn.experiments.report import (
    PLOTS,
    SELECTED_COLUMN,
    TABLE_COLUMNS,
    Group,
    RunData,
    build_report,
    load_reference,
    plot_accuracy,
    plot_firing_rates,
    plot_layer_density,
    series_styles,
)
from sparsesnn.experiments.sweep import ERROR_FILE, cpu_cores, plan_sweep, run_sweep, split_values
from sparsesnn.train.config import load_config
from sparsesnn.train.trainer import METRICS_FILE, Trainer
from tests.conftest import fit_killed_after_epoch, run_metrics, tiny_toml

matplotlib_image = pytest.importorskip("matplotlib.image", reason="the report needs matplotlib (the plot extra)")

REPO = Path(__file__).resolve().parents[1]
# two epochs of six batches: seconds per run, yet accuracy, SOPs and firing differ between methods and densities
BASE = (
    tiny_toml()
    .replace("hidden = [32]", "hidden = [48]")
    .replace("epochs = 3", "epochs = 2")
    .replace("batch_size = 32", "batch_size = 64")
    .replace("lr = 0.003", "lr = 0.02")
    # every step (rigl) or epoch (set): set's rewiring stops at the last epoch, so update_every = 2 never rewires
    .replace("update_every = 2", "update_every = 1")
)
GRID = ["sparse.method=dense,rigl,set", "sparse.density=0.5,0.2"]
EXPECTED = {
    f"method-{m}__density-{d}__seed-{s}"
    for s in (0, 1)
    for m, d in [("dense", "1.0"), ("rigl", "0.5"), ("rigl", "0.2"), ("set", "0.5"), ("set", "0.2")]
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _config(tmp: Path, text: str = BASE) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "base.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep of the issue in miniature, through the command line: 3 methods x 2 densities x 2 seeds, dense
    collapsed to one run per seed (10 runs), 2 at a time, then the report."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    argv = ["sweep", "--config", str(_config(tmp)), "--seeds", "2", "--jobs", "2", "--out", str(out), "--report"]
    for g in GRID:
        argv += ["--grid", g]
    assert main(argv) == 0
    return out


# ----------------------------------------------------------------------------------------------------------------------
# planning and validation (nothing trains)
# ----------------------------------------------------------------------------------------------------------------------
def test_grid_expansion_names_and_dense_collapse(tmp_path):
    runs = plan_sweep(_config(tmp_path), GRID, seeds=[0, 1], out_dir=tmp_path / "o", threads=1)
    assert {r.name for r in runs} == EXPECTED and len(runs) == 10
    assert [r.seed for r in runs] == [0] * 5 + [1] * 5  # every setting of seed 0 first
    for r in runs:
        assert r.run_dir == tmp_path / "o" / r.name
        assert r.config.run.seed == r.seed and r.config.run.name == r.name and r.config.run.threads == 1
        assert r.config.sparse.method == r.settings["sparse.method"]
        assert r.config.sparse.density == r.settings["sparse.density"]
    dense = [r for r in runs if r.config.sparse.method == "dense"]
    assert len(dense) == 2 and all(r.config.sparse.density == 1.0 for r in dense)
    # values are TOML, split on top-level commas only; keys are shortened to a unique suffix
    assert split_values("[48],[64, 32]") == ["[48]", "[64, 32]"]
    runs = plan_sweep(
        _config(tmp_path),
        ["model.params.hidden=[48],[24, 24]", "sparse.params.update_every=2,3"],
        seeds=[5],
        out_dir=tmp_path / "o",
    )
    assert [r.name for r in runs] == [
        "hidden-48__update_every-2__seed-5",
        "hidden-48__update_every-3__seed-5",
        "hidden-24-24__update_every-2__seed-5",
        "hidden-24-24__update_every-3__seed-5",
    ]
    assert runs[2].config.model.params["hidden"] == [24, 24] and runs[3].config.sparse.params["update_every"] == 3


@pytest.mark.parametrize(
    "grid,message",
    [
        (["sparse.method=rigl", "sparse.densty=0.5,0.1"], r"sparse\.densty: unknown key"),
        (["sparse.density=0.5,1.5"], r"(?s)sparse\.density=1\.5.*sparse\.density = 1\.5: Input should be less than"),
        (["sparse.method=rigl,magic"], r"sparse\.method = 'magic': unknown method"),
        (["sparse.method=rigl,static"], r"sparse\.params: method 'static': update_every: not a setting"),
        (["run.seed=1,2"], r"--grid run\.seed: the sweep sets it itself"),
        (["sparse.density"], r"--grid expects KEY=V1,V2"),
    ],
)
def test_bad_grid_fails_up_front_naming_the_key(tmp_path, grid, message):
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=message):
        run_sweep(_config(tmp_path), grid, seeds=[0, 1], out_dir=out)
    assert not out.exists()  # nothing ran, nothing written


def test_bad_grid_exit_status_on_the_command_line(tmp_path, capsys):
    argv = ["sweep", "--config", str(_config(tmp_path)), "--grid", "sparse.densty=0.5", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "sparse.densty: unknown key" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------------
def test_sweep_end_to_end(sweep_dir):
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    assert {r["name"] for r in manifest["runs"]} == EXPECTED
    assert all(
        r["status"] == "finished" and r["action"] == "started" and r["returncode"] == 0 for r in manifest["runs"]
    )
    assert manifest["counts"] == {"finished": 10} and manifest["jobs"] == 2
    for entry in manifest["runs"]:
        rd = sweep_dir / entry["run_dir"]
        cfg = load_config(rd / "config.toml")
        assert cfg.run.seed == entry["seed"] and cfg.sparse.method == entry["settings"]["sparse.method"]
        assert cfg.run.threads == manifest["threads_per_run"] == max(1, cpu_cores() // 2)  # 2 jobs share the cores
        assert [m["epoch"] for m in run_metrics(rd)] == [1, 2]
        assert json.loads((rd / "summary.json").read_text())["epochs"] == 2
    assert (sweep_dir / "report" / "index.html").is_file()


def test_sweep_again_skips_finished_runs_and_refuses_changed_ones(sweep_dir, tmp_path):
    config = _config(tmp_path)
    again = run_sweep(config, GRID, seeds=[0, 1], out_dir=sweep_dir, jobs=2)
    assert again.ok and {r.action for r in again.runs} == {"skipped"}
    # the same run dirs with another budget: left alone, reported, nothing trained
    changed = run_sweep(config, GRID, seeds=[0, 1], sets=["run.epochs=3"], out_dir=sweep_dir, jobs=2)
    assert len(changed.failed) == 10 and all("run.epochs: 2 != 3" in (r.error or "") for r in changed.failed)
    assert all(json.loads((r.run_dir / "summary.json").read_text())["epochs"] == 2 for r in changed.runs)
    assert run_sweep(config, GRID, seeds=[0, 1], out_dir=sweep_dir, jobs=2).ok  # and the manifest recovers


def test_resume_skips_finished_continues_interrupted_starts_fresh(tmp_path, monkeypatch):
    config = _config(tmp_path)
    out = tmp_path / "o"
    grid = ["sparse.method=rigl"]
    runs = {r.seed: r for r in plan_sweep(config, grid, seeds=[0, 1, 2], out_dir=out, threads=1)}
    Trainer(runs[0].config, runs[0].run_dir, quiet=True).fit()  # finished before the sweep
    Trainer(runs[1].config, tmp_path / "reference", quiet=True).fit()  # what seed 1 gives uninterrupted
    fit_killed_after_epoch(Trainer(runs[1].config, runs[1].run_dir, quiet=True), 1, monkeypatch)
    assert not (runs[1].run_dir / "summary.json").exists() and (runs[1].run_dir / "checkpoint.pt").exists()
    summary0 = (runs[0].run_dir / "summary.json").read_text()

    result = run_sweep(config, grid, seeds=[0, 1, 2], out_dir=out, jobs=2, threads=1)
    assert result.ok
    assert {r.seed: r.action for r in result.runs} == {0: "skipped", 1: "resumed", 2: "started"}
    assert (runs[0].run_dir / "summary.json").read_text() == summary0  # untouched
    assert run_metrics(runs[1].run_dir) == run_metrics(tmp_path / "reference")  # the exact continuation
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["action"] for r in manifest["runs"]] == ["skipped", "resumed", "started"]


def test_failing_run_does_not_stop_the_others(tmp_path, capsys):
    # mnist without data.root validates but fails when the data loads: a run-time failure in one run of two
    out = tmp_path / "o"
    argv = [
        "sweep",
        "--config",
        str(_config(tmp_path)),
        "--grid",
        "data.name=mnist,digits",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "name-mnist__seed-0: FAILED" in err and "name-digits__seed-0: finished" in err
    assert "root is required" in (out / "name-mnist__seed-0" / ERROR_FILE).read_text()
    assert (out / "name-digits__seed-0" / "summary.json").is_file()
    statuses = {r["name"]: r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]}
    assert statuses == {"name-mnist__seed-0": "failed", "name-digits__seed-0": "finished"}


# ----------------------------------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------------------------------
def test_report_numbers_are_the_runs_means(sweep_dir):
    report = sweep_dir / "report"
    for f in ("index.html", "results.json", "table.md", *PLOTS.values()):
        assert (report / f).is_file(), f
    results = json.loads((report / "results.json").read_text())
    groups = {g["label"]: g for g in results["groups"]}
    assert set(groups) == {"dense", "rigl @ 0.5", "rigl @ 0.2", "set @ 0.5", "set @ 0.2"}
    table = (report / "table.md").read_text()
    for g in groups.values():
        assert g["n"] == 2 and g["seeds"] == [0, 1]
        lasts = [json.loads((Path(rd) / METRICS_FILE).read_text().splitlines()[-1]) for rd in g["runs"]]
        summaries = [json.loads((Path(rd) / "summary.json").read_text()) for rd in g["runs"]]
        for key in ("test_acc", "density", "sops", "energy_uJ", "firing_rate"):
            values = [m[key] for m in lasts]
            assert g[f"{key}_mean"] == pytest.approx(statistics.fmean(values)), key
            assert g[f"{key}_std"] == pytest.approx(statistics.stdev(values)), key
        assert g["params_mean"] == pytest.approx(
            statistics.fmean(sum(r["active"] for r in s["layers"]) for s in summaries)
        )
        dense = groups["dense"]["test_acc_mean"]
        if g["method"] == "dense":
            assert g["acc_loss_vs_dense_pt"] is None
        else:
            assert g["acc_loss_vs_dense_pt"] == pytest.approx((dense - g["test_acc_mean"]) * 100)
            row = next(
                line for line in table.splitlines() if line.startswith(f"| {g['method']} | {g['target_density']:g} |")
            )
            assert f"{g['test_acc_mean'] * 100:.2f} ± {g['test_acc_std'] * 100:.2f}" in row
            assert f"{g['acc_loss_vs_dense_pt']:+.2f}" in row
            assert f"| {g['mac_density_mean'] * 100:.2f} |" in row  # the engine logs the MAC density of every run
    assert "Acc. loss vs dense (pt)" in table and "Conn. %" in table and "MAC %" in table and "Params" in table
    assert SELECTED_COLUMN not in table and results["columns"] == TABLE_COLUMNS  # no run holds out a validation split


def test_report_pngs_are_real_images(sweep_dir):
    for name in PLOTS.values():
        img = matplotlib_image.imread(sweep_dir / "report" / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, name
        assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 20, name  # drawn, not blank


def test_series_styles_tell_more_series_than_colours_apart():
    names = [f"method{i}" for i in range(75)]
    styles = series_styles([*names, "method0"])  # a repeated name keeps its first style
    assert len(styles) == 75
    assert len(set(styles[n] for n in names[:70])) == 70  # 10 colours x 7 markers, no pair twice
    assert len({c for c, _ in styles.values()}) == 10 and len({m for _, m in styles.values()}) == 7
    assert styles["method70"] == styles["method0"]  # lcm(10, 7) = 70: the first repeat


def _long_label_groups(tmp_path, n_series, metrics, stats_of):
    """``n_series`` one-run groups whose series names carry a 190-character settings label, as a sweep over
    ``sparse.params`` gives; ``stats_of(i)`` is the i-th group's stats."""
    settings = "sparse.params={" + ", ".join(f"setting_{k}={k}" for k in range(12)) + "}"
    groups = []
    for i in range(n_series):
        run = RunData(tmp_path / f"r{i}", {"sparse.method": f"m{i}", "sparse.density": 0.1}, metrics, {})
        name = f"m{i} ({settings})"
        groups.append(Group(key=name, runs=[run], series=name, label=name, stats=stats_of(i)))
    return groups


@pytest.mark.parametrize("n_series", [3, 13])
def test_the_accuracy_legend_sits_below_the_axes_uncut(tmp_path, n_series):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    groups = _long_label_groups(
        tmp_path,
        n_series,
        [{}],
        lambda i: {"test_acc_mean": 0.9 + i / 1000, "test_acc_std": 0.001, "density_mean": 0.1, "density_std": 0.0},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied because axes sizes collapsed"
        fig = plot_accuracy(groups, "density", 0.01, "density (%)", tmp_path / "acc.png")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (legend,) = fig.legends
    assert [t.get_text().replace("\n    ", " ") for t in legend.get_texts()] == [g.series for g in groups]
    box, axes, figure = legend.get_window_extent(renderer), fig.axes[0].get_window_extent(renderer), fig.bbox
    assert box.y1 <= axes.y0  # below the axes: hides no point
    assert figure.x0 <= box.x0 and box.x1 <= figure.x1 and figure.y0 <= box.y0  # inside the figure: no label cut
    assert axes.height > 250  # the axes keep their height however long the legend
    img = matplotlib_image.imread(tmp_path / "acc.png")
    assert img.shape[0] == round(fig.get_figheight() * 100) and img.shape[0] > 480


@pytest.mark.parametrize("plot", [plot_layer_density, plot_firing_rates])
def test_panel_titles_naming_long_settings_do_not_run_into_each_other(tmp_path, plot):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    metrics = [
        {"epoch": e, "density": 1 - e / 10, "layer_density": {"fc1": 1 - e / 10}, "firing_rates": {"fc1": 0.1}}
        for e in (1, 2)
    ]
    groups = _long_label_groups(tmp_path, 3, metrics, lambda i: {"density_mean": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot(groups, tmp_path / "panels.png")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = sorted((ax.title.get_window_extent(renderer) for ax in fig.axes), key=lambda b: b.x0)
    assert len(boxes) == 3
    for left, right in itertools.pairwise(boxes):
        assert left.x1 < right.x0  # side by side, not overlapping
    assert all(fig.bbox.x0 <= b.x0 and b.x1 <= fig.bbox.x1 for b in boxes)
    assert all(g.series.split()[0] in ax.get_title() for g, ax in zip(groups, fig.axes, strict=True))


def test_reference_points_drawn_only_for_the_runs_dataset(sweep_dir, tmp_path, capsys):
    ref = tmp_path / "points.toml"
    ref.write_text(
        '[[point]]\nlabel = "toy digits claim"\ndataset = "digits"\naccuracy = 90.0\ndensity = 30.0\nsops = 0.0002\n'
        'source = "made up for the test"\n\n'
        '[[point]]\nlabel = "cifar claim"\ndataset = "cifar10"\naccuracy = 92.48\ndensity = 40.58\n'
    )
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "r"), "--reference", str(ref)]) == 0
    index = Path(capsys.readouterr().out.strip())
    assert index == tmp_path / "r" / "index.html"
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [p["label"] for p in results["reference_drawn"]] == ["toy digits claim"]
    page = index.read_text()
    assert "toy digits claim" in page and "cifar claim" not in page
    with_ref = matplotlib_image.imread(tmp_path / "r" / PLOTS["acc_vs_density"])
    without = matplotlib_image.imread(sweep_dir / "report" / PLOTS["acc_vs_density"])
    assert with_ref.shape != without.shape or not np.array_equal(with_ref, without)
    # the bundled papers' points: loadable, and none of them is for digits
    bundled = load_reference(REPO / "configs" / "reference" / "reported_points.toml")
    assert {"cifar10", "mnist", "cifar10_dvs"} <= {p["dataset"] for p in bundled}
    build_report([sweep_dir], tmp_path / "b", REPO / "configs" / "reference" / "reported_points.toml")
    assert json.loads((tmp_path / "b" / "results.json").read_text())["reference_drawn"] == []
    bad = tmp_path / "bad.toml"
    bad.write_text('[[point]]\nlabel = "x"\ndataset = "digits"\naccuracy = 1.0\n')
    with pytest.raises(ConfigError, match=r"point 1 \(x\): density: Field required"):
        load_reference(bad)


def _screenshot(page: Path, shot: Path, profile: Path) -> np.ndarray:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--window-size=1280,4000",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 0, proc.stderr[-2000:]
    return np.asarray(matplotlib_image.imread(shot))[..., :3]


def _plot_pixels(img: np.ndarray) -> int:
    """Pixels in matplotlib's first two series colours (#1f77b4, #ff7f0e): only the plots have them."""
    rgb = np.round(img * 255)
    return sum(int(np.all(np.abs(rgb - c) <= 10, axis=-1).sum()) for c in ([31, 119, 180], [255, 127, 14]))


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run tries it)"
)
def test_report_renders_in_a_real_browser(sweep_dir, tmp_path):
    img = _screenshot(sweep_dir / "report" / "index.html", tmp_path / "shot.png", tmp_path / "profile")
    assert img.shape[0] >= 1000 and img.std() > 0.05  # a page, not a blank
    shown = _plot_pixels(img)
    # the same page without its PNGs (broken images) shows none of the plot colours: the count is the plots'
    (tmp_path / "bare").mkdir()
    shutil.copy(sweep_dir / "report" / "index.html", tmp_path / "bare" / "index.html")
    bare = _plot_pixels(_screenshot(tmp_path / "bare" / "index.html", tmp_path / "bare.png", tmp_path / "profile2"))
    assert bare < 50 and shown > 5000, (shown, bare)


# ----------------------------------------------------------------------------------------------------------------------
# TensorBoard (optional)
# ----------------------------------------------------------------------------------------------------------------------
def _tb_toml() -> str:
    return BASE.replace("max_steps_per_epoch = 6", "max_steps_per_epoch = 2\ntensorboard = true")


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    cfg_path = _config(tmp_path, _tb_toml())
    trainer = Trainer(load_config(cfg_path), tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match=r"sparsesnn\[tb\]"):
        trainer.fit()
    assert not (tmp_path / "run" / "metrics.jsonl").read_text()  # stopped before training


def test_tensorboard_logs_the_epoch_scalars(tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="tensorboard (the tb extra) is not installed")
    event_acc = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    Trainer(load_config(_config(tmp_path, _tb_toml())), tmp_path / "run", quiet=True).fit()
    acc = event_acc.EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"test_acc", "density", "sops", "energy_uJ"} <= set(tags)
    assert any(t.startswith("layer_density/") for t in tags) and any(t.startswith("firing_rates/") for t in tags)
    records = run_metrics(tmp_path / "run")
    assert [e.value for e in acc.Scalars("test_acc")] == pytest.approx([r["test_acc"] for r in records])


def test_labels_name_only_settings_that_tell_groups_apart(tmp_path):
    """A section only some runs have (the distillation runs' [distill]) neither floods the other labels nor hides the
    dense reference; a value two groups set differently is named."""
    from sparsesnn.experiments.report import RunData, group_runs

    def run(name: str, method: str, density: float, **extra: object) -> RunData:
        config = {
            "run.name": name,
            "run.seed": 0,
            "data.name": "mnist",
            "sparse.method": method,
            "sparse.density": density,
            **extra,
        }
        last = {"test_acc": 0.99 - 0.01 * (1 - density), "density": density}
        return RunData(tmp_path / name, config, [last], {"best_test_acc": last["test_acc"]})

    groups = group_runs(
        [
            run("dense", "dense", 1.0),
            run("esl", "esl", 0.1),
            run("kd4", "evokd", 0.1, **{"distill.temperature": 4.0, "distill.weight": 0.5}),
            run("kd2", "evokd", 0.1, **{"distill.temperature": 2.0, "distill.weight": 0.5}),
        ]
    )
    labels = {g.first.name: g.label for g in groups}
    assert labels == {
        "dense": "dense",
        "esl": "esl @ 0.1",
        "kd4": "evokd (distill.temperature=4.0) @ 0.1",
        "kd2": "evokd (distill.temperature=2.0) @ 0.1",
    }
    for g in groups:
        if g.method != "dense":
            assert g.stats["dense_reference"] == "dense"
            assert g.stats["acc_loss_vs_dense_pt"] == pytest.approx(0.9)


def test_distillation_runs_group_by_their_teachers_recipe_not_its_path(tmp_path):
    """Each seed distilled from its own dense run (same recipe, other seed) is one group; a teacher of another recipe
    is another group; a teacher path that cannot be read keeps the path as the setting."""
    from sparsesnn.experiments.report import group_runs, read_run

    def write(name: str, seed: int, method: str, acc: float, teacher: str | None = None, hidden: int = 32) -> Path:
        d = tmp_path / name
        d.mkdir()
        distill = f'\n[distill]\nsource = "run"\nteacher_run = "{teacher}"\n' if teacher else ""
        d.joinpath("config.toml").write_text(
            f'[run]\nname = "{name}"\nseed = {seed}\n[data]\nname = "mnist"\n[model]\nname = "mlp"\n'
            f'params = {{ hidden = [{hidden}] }}\n[sparse]\nmethod = "{method}"\ndensity = 0.1\n{distill}'
        )
        d.joinpath("metrics.jsonl").write_text(json.dumps({"test_acc": acc, "density": 0.1}) + "\n")
        d.joinpath("summary.json").write_text(json.dumps({"best_test_acc": acc}))
        return d

    teachers = [write(f"dense{s}", s, "dense", 0.99) for s in (0, 1)]
    wide = write("dense_wide", 0, "dense", 0.995, hidden=64)
    runs = [write(f"kd{s}", s, "evokd", 0.98 + 0.002 * s, str(teachers[s])) for s in (0, 1)]
    runs.append(write("kd_wide", 0, "evokd", 0.97, str(wide)))
    runs.append(write("kd_missing", 0, "evokd", 0.96, str(tmp_path / "gone")))
    groups = group_runs([read_run(d) for d in runs])
    sizes = sorted((g.stats["n"], round(g.stats["test_acc_mean"], 4)) for g in groups)
    assert sizes == [(1, 0.96), (1, 0.97), (2, 0.981)]
    paired = next(g for g in groups if g.stats["n"] == 2)
    assert {r.name for r in paired.runs} == {"kd0", "kd1"}
    assert json.loads(paired.key)["distill.teacher_run"].startswith("dense run, recipe ")
    missing = next(g for g in groups if g.first.name == "kd_missing")
    assert json.loads(missing.key)["distill.teacher_run"] == str(tmp_path / "gone")


def test_a_second_sweep_in_the_same_directory_is_refused(tmp_path):
    import fcntl

    from sparsesnn.experiments.sweep import LOCK_FILE

    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_FILE, "ab") as held:  # the first sweep, still running
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another sweep is running"):
            run_sweep(_config(tmp_path), ["sparse.method=dense"], out_dir=out)
    assert not (out / "sweep.json").exists()  # nothing was started or written
