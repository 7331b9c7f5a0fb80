"""A static HTML report of finished runs: plots, a table in the papers' format, ``results.json`` and ``table.md``.

    sparsesnn report runs/sweeps/mnist_dense [more run or sweep dirs...] [--out DIR] [--reference FILE]

Each run directory is read as the engine wrote it (``config.toml``, ``metrics.jsonl``, ``summary.json``); runs
without ``summary.json`` (failed or unfinished) are listed but not counted. Runs whose configs agree on everything
but the seed (``run.seed``, ``run.name`` and where/how they ran are ignored; a distillation teacher given as a run
directory counts by its recipe, not its path) form a **group**; a group's numbers
are the mean and the spread (sample standard deviation, n - 1) over its seeds, taken at the **last epoch** of each
run. Groups whose settings differ only in ``sparse.density`` form a **series** (one curve per method).

Labels come from what differs (:func:`describe`): a group is its method, the settings in which it differs from the
other groups (``data.name``, ``sparse.params``, ...) and its density target; a run in the *Runs* table is its group's
description plus its seed where that is what tells runs apart, and its directory where nothing else does. No two
different groups or runs share a label; ``run.name`` (which every run launched from one recipe may share) is not
used for it.

Table columns (``table.md`` holds the same table in Markdown):

* *Acc. %*: final test accuracy, mean ± std over seeds.
* *Val-selected acc. %* (only when some run holds out ``data.validation_samples``): test accuracy of the checkpoint
  chosen on the validation split (``selected_test_acc`` of ``summary.json``), mean ± std; ``-`` for groups without.
* *Acc. loss vs dense (pt)*: accuracy of the dense group with the same non-``[sparse]`` settings minus this
  group's, in percentage points (positive = the sparse network is worse); ``-`` where the runs hold no such group.
* *Conn. %*: measured connection density over the masked layers (``density`` of ``metrics.jsonl``).
* *SOPs (M)*: effective synaptic operations per sample in millions (spikes x live fan-out; the analog first layer
  is counted as MACs, not here). *Energy (uJ)*: 0.9 pJ x SOPs + 4.6 pJ x MACs per sample.
* *Params*: live weights of every Conv/Linear layer (masks applied; biases and norms not counted).

Plots (PNG, beside ``index.html``): accuracy vs connection density per method with error bars (and the papers'
reported points for the same dataset, from ``--reference``), accuracy vs SOPs and vs energy, density per layer
over the epochs (one representative run per method: its sparsest group, lowest seed), firing rate per layer at the
last epoch (mean over seeds).

A reference file (TOML ``[[point]]`` tables, or a JSON list) holds the papers' claims: ``label``, ``dataset`` (a
dataset name of sparsesnn, e.g. ``cifar10``), ``accuracy`` (%), ``density`` (connection density, %), optional
``sops`` (M), ``source`` and ``note``. Only points whose dataset matches a run's are drawn; see
``configs/reference/reported_points.toml``.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import statistics
import sys
import textwrap
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparsesnn.core.errors import ConfigError, SparseSNNError
from sparsesnn.core.files import atomic_write_text
from sparsesnn.core.settings import settings_errors
from sparsesnn.train.config import flatten
from sparsesnn.train.rundir import CONFIG_FILE, is_run_dir, read_metrics, read_summary

#: config keys that do not change what a run computes (or that tell seeds apart): ignored when grouping
IGNORED_KEYS = frozenset(
    {
        "run.seed",
        "run.name",
        "run.out_dir",
        "run.threads",
        "run.device",
        "run.checkpoint_every_steps",
        "run.tensorboard",
        "data.num_workers",
        "data.pin_memory",
        "data.root",
    }
)
PLOTS = {
    "acc_vs_density": "acc_vs_density.png",
    "acc_vs_sops": "acc_vs_sops.png",
    "acc_vs_energy": "acc_vs_energy.png",
    "layer_density": "layer_density.png",
    "firing_rates": "firing_rates.png",
}


# ----------------------------------------------------------------------------------------------------------------------
# reading runs
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class RunData:
    """One run directory as read from disk."""

    run_dir: Path
    config: dict[str, Any]  # flattened: dotted key -> value
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    #: the teacher run's recipe, seed aside (``distill.teacher_run`` names a run directory that can be read)
    teacher_recipe: str | None = None

    @property
    def name(self) -> str:
        return str(self.config.get("run.name", self.run_dir.name))

    @property
    def method(self) -> str:
        return str(self.config.get("sparse.method", "dense"))

    @property
    def target_density(self) -> float:
        return float(self.config.get("sparse.density", 1.0))

    @property
    def dataset(self) -> str:
        return str(self.config.get("data.name", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("run.seed", 0))

    @property
    def last(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def finished(self) -> bool:
        return self.summary is not None and bool(self.metrics)

    @property
    def params(self) -> int | None:
        layers = (self.summary or {}).get("layers")
        return sum(int(r["active"]) for r in layers) if layers else None

    def group_key(self) -> str:
        """The settings that make this run what it is, seed aside, as canonical JSON.

        A teacher given as a run directory counts by its recipe, not its path: distillation runs whose teachers
        are the same recipe with different seeds (each seed distilled from its own dense run) form one group.
        """
        settings = recipe_settings(self.config)
        if self.teacher_recipe is not None:
            settings["distill.teacher_run"] = self.teacher_recipe
        return json.dumps(settings, sort_keys=True)


def recipe_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A flattened config without the keys that tell seeds apart or do not change the computation."""
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories from run dirs, sweep dirs (the runs their ``sweep.json`` lists) or dirs of runs."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise SparseSNNError(f"{p}: not a directory")
        if is_run_dir(p):
            found = [p]
        elif (p / "sweep.json").is_file():
            manifest = json.loads((p / "sweep.json").read_text(encoding="utf-8"))
            found = [p / r["run_dir"] for r in manifest.get("runs", [])]
            found = [d for d in found if is_run_dir(d)]
        else:
            found = sorted(d for d in p.iterdir() if d.is_dir() and is_run_dir(d))
        if not found:
            raise SparseSNNError(f"{p}: holds no run (no config.toml with metrics.jsonl, no sweep.json)")
        out.extend(d for d in found if d.resolve() not in {o.resolve() for o in out})
    return out


def read_run(run_dir: Path) -> RunData:
    """Read one run directory (``config.toml`` raw, not re-validated, so older runs still read)."""
    try:
        config = tomllib.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SparseSNNError(f"{run_dir / CONFIG_FILE}: cannot read ({exc})") from None
    metrics = read_metrics(run_dir)
    summary = read_summary(run_dir)
    flat = flatten(config)
    return RunData(run_dir, flat, metrics, summary, _teacher_recipe(flat.get("distill.teacher_run"), run_dir))


def _teacher_recipe(teacher_run: Any, run_dir: Path) -> str | None:
    """``"<method> run, recipe <hash>"`` for a teacher run directory whose config reads (seed and name aside)."""
    if not isinstance(teacher_run, str) or not teacher_run:
        return None
    for candidate in (Path(teacher_run), run_dir / teacher_run):
        try:
            config = flatten(tomllib.loads((candidate / CONFIG_FILE).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        recipe = json.dumps(recipe_settings(config), sort_keys=True)
        digest = hashlib.sha1(recipe.encode()).hexdigest()[:8]
        return f"{config.get('sparse.method', 'dense')} run, recipe {digest}"
    return None


# ----------------------------------------------------------------------------------------------------------------------
# aggregation
# ----------------------------------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


@dataclass
class Group:
    """Runs that differ only in their seed."""

    key: str
    runs: list[RunData]
    series: str = ""
    label: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> RunData:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def target_density(self) -> float:
        return self.first.target_density

    @property
    def dataset(self) -> str:
        return self.first.dataset


_STAT_FIELDS = {  # results.json name -> value of one run
    "test_acc": lambda r: r.last.get("test_acc"),
    "best_test_acc": lambda r: (r.summary or {}).get("best_test_acc"),
    "selected_test_acc": lambda r: (r.summary or {}).get("selected_test_acc"),  # runs holding out a validation split
    "density": lambda r: r.last.get("density"),
    "density_all": lambda r: r.last.get("density_all"),
    "sops": lambda r: r.last.get("sops"),
    "macs": lambda r: r.last.get("macs"),
    "energy_uJ": lambda r: r.last.get("energy_uJ"),
    "firing_rate": lambda r: r.last.get("firing_rate"),
    "params": lambda r: r.params,
    "train_time_s": lambda r: (r.summary or {}).get("train_time_s"),
}


def _fmt_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def _sets(settings: dict[str, Any], key: str) -> bool:
    """Whether a run's settings give ``key`` a value (absent, None and an empty ``params`` table do not)."""
    return settings.get(key) not in (None, {})


def _setting_text(settings: dict[str, Any], key: str) -> str:
    return f"{key}={_fmt_value(settings[key]) if _sets(settings, key) else 'unset'}"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def describe(settings: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(series, label)`` for each of several runs' or groups' settings (:func:`recipe_settings`), named by what
    differs between them, with no label given to two different settings.

    The series is the method plus, in brackets, every key that the settings which set it set differently (a key
    only one kind of run has, such as the distillation runs' ``[distill]`` section, is told apart by the method
    already; ``sparse.*`` keys are left out of the dense method's); the label adds ``@ density`` for a sparse method.
    Where two different settings would still share a label (a key that one sets and the other leaves at its
    default, say, or two dense runs whose ``[sparse]`` tables differ), every key in which they differ is added, shown
    as ``unset`` where one of them does not set it; a last resort numbers what is left (values that print alike).

    >>> describe([{"sparse.method": "rigl", "sparse.density": 0.1, "data.name": "mnist"},
    ...           {"sparse.method": "rigl", "sparse.density": 0.1, "data.name": "fashion"}])[0]
    ('rigl (data.name=mnist)', 'rigl (data.name=mnist) @ 0.1')
    """
    keys = sorted({k for s in settings for k in s})
    varying = [k for k in keys if len({_dumps(s[k]) for s in settings if _sets(s, k)}) > 1]
    methods = [str(s.get("sparse.method", "dense")) for s in settings]
    extras: list[list[str]] = []
    for s, method in zip(settings, methods, strict=True):
        extra = [k for k in varying if k not in ("sparse.method", "sparse.density") and _sets(s, k)]
        if method == "dense":  # sparse.* settings mean nothing for the dense method
            extra = [k for k in extra if not k.startswith("sparse.")]
        extras.append(extra)

    def named(i: int) -> tuple[str, str]:
        s, method = settings[i], methods[i]
        series = method + (" (" + ", ".join(_setting_text(s, k) for k in extras[i]) + ")" if extras[i] else "")
        return series, series if method == "dense" else f"{series} @ {float(s.get('sparse.density', 1.0)):g}"

    out = [named(i) for i in range(len(settings))]
    dumps = [_dumps(s) for s in settings]  # equal settings keep one label: only different ones are told apart
    for members in _same_labels([label for _, label in out], dumps):
        differ = [k for k in keys if len({_dumps(settings[i].get(k)) for i in members}) > 1]
        for i in members:
            extras[i] = sorted({*extras[i], *differ})
            out[i] = named(i)
    for members in _same_labels([label for _, label in out], dumps):  # values that differ but print alike
        number = {d: n for n, d in enumerate(dict.fromkeys(dumps[i] for i in members), 1)}
        for i in members:
            out[i] = (f"{out[i][0]} #{number[dumps[i]]}", f"{out[i][1]} #{number[dumps[i]]}")
    return out


def _same_labels(labels: Sequence[str], keys: Sequence[str] | None = None) -> list[list[int]]:
    """Indices of ``labels`` that share their label with another whose ``keys`` entry differs (all others when
    ``keys`` is None), one list per shared label."""
    where: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        where.setdefault(label, []).append(i)
    kinds = keys if keys is not None else [str(i) for i in range(len(labels))]
    return [members for members in where.values() if len({kinds[i] for i in members}) > 1]


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """A label for each run, unique among ``runs``: :func:`describe` of the runs' settings, then the seed where
    runs with that label differ in it, then the run directory where two runs still share a label (a recipe run
    twice with the same seed)."""
    settings = []
    for r in runs:
        s = recipe_settings(r.config)
        if r.teacher_recipe is not None:
            s["distill.teacher_run"] = r.teacher_recipe
        settings.append(s)
    labels = [label for _, label in describe(settings)]
    for members in _same_labels(labels):
        if len({runs[i].seed for i in members}) > 1:
            for i in members:
                labels[i] += f", seed {runs[i].seed}"
    for members in _same_labels(labels):
        for i in members:
            labels[i] += f" [{runs[i].run_dir.name}]"
    for members in _same_labels(labels):  # equal directory names in different places
        for i in members:
            labels[i] += f" [{runs[i].run_dir}]"
    return labels


def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Group finished runs by their settings (seed aside), name series and labels (:func:`describe`), aggregate
    over seeds."""
    groups: dict[str, Group] = {}
    for r in runs:
        if r.finished:
            groups.setdefault(r.group_key(), Group(r.group_key(), [])).runs.append(r)
    glist = list(groups.values())
    settings = [json.loads(g.key) for g in glist]
    for g, (series, label) in zip(glist, describe(settings), strict=True):
        g.runs.sort(key=lambda r: r.seed)
        g.series, g.label = series, label
        for name, get in _STAT_FIELDS.items():
            mean, std = _mean_std([get(r) for r in g.runs])
            g.stats[f"{name}_mean"], g.stats[f"{name}_std"] = mean, std
        g.stats["n"] = len(g.runs)
        g.stats["seeds"] = [r.seed for r in g.runs]
    for g, s in zip(glist, settings, strict=True):
        dense = _dense_reference(g, s, glist, settings)
        acc, dacc = g.stats["test_acc_mean"], dense.stats["test_acc_mean"] if dense else None
        g.stats["acc_loss_vs_dense_pt"] = (dacc - acc) * 100 if dense is not None and dense is not g else None
        g.stats["dense_reference"] = dense.label if dense is not None and dense is not g else None
    glist.sort(key=lambda g: (g.method != "dense", g.series, -g.target_density))
    return glist


def _dense_reference(g: Group, s: dict[str, Any], groups: list[Group], settings: list[dict[str, Any]]) -> Group | None:
    """The dense group whose settings outside ``[sparse]`` and ``[distill]`` (the method's own) equal ``g``'s."""

    def outside(settings_of: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings_of.items() if not k.startswith(("sparse.", "distill."))}

    for other, so in zip(groups, settings, strict=True):
        if other.method == "dense" and outside(so) == outside(s):
            return other
    return None


# ----------------------------------------------------------------------------------------------------------------------
# reference points
# ----------------------------------------------------------------------------------------------------------------------
class ReferencePoint(BaseModel):
    """A paper's reported result, drawn beside the runs of its dataset (``configs/reference/reported_points.toml``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(min_length=1, description="how the point is named in the plot")
    dataset: str = Field(min_length=1, description="the dataset it was measured on (drawn only beside its runs)")
    accuracy: float = Field(ge=0.0, le=100.0, description="top-1 test accuracy, %")
    density: float = Field(gt=0.0, le=100.0, description="connection density, %")
    sops: float | None = Field(None, ge=0.0, description="synaptic operations per sample, millions")
    source: str | None = Field(None, description="where the number is printed (paper, table)")
    note: str | None = Field(None, description="anything that qualifies the number")


def load_reference(path: str | Path) -> list[dict[str, Any]]:
    """Read the papers' reported points (TOML ``[[point]]`` or a JSON list); each needs label, dataset, accuracy
    (%), density (%)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read reference file {p}: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") from None
    if isinstance(data, dict):
        data = data.get("point", data.get("points"))
    if not isinstance(data, list):
        raise ConfigError(f"{p}: expected a list of points ([[point]] tables in TOML, a list in JSON)")
    points = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigError(f"{p}: point {i + 1} is not a table")
        try:
            points.append(ReferencePoint(**item).model_dump(exclude_none=True))
        except ValidationError as err:
            label = item.get("label", "?")
            raise ConfigError(f"{p}: point {i + 1} ({label}): " + "; ".join(settings_errors(err))) from None
    return points


# ----------------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SparseSNNError(
            "the report draws its plots with matplotlib: pip install 'sparsesnn[plot]' (or matplotlib)"
        ) from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7 markers, coprime with the 10 colours


def series_styles(series: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A (colour, marker) per series, in first-seen order; no two of the first 70 series share both.

    Series ``i`` gets colour ``i mod 10`` (matplotlib's "tab10") and marker ``i mod 7``; as 10 and 7 are coprime
    the pair repeats only after ``lcm(10, 7) = 70`` series, so a report with more methods than colours stays
    readable.
    """
    palette = _palette()
    return {s: (palette[i % len(palette)], _MARKERS[i % len(_MARKERS)]) for i, s in enumerate(dict.fromkeys(series))}


def _palette() -> tuple[str, ...]:
    """matplotlib's default colour cycle ("tab10"), as hex: the colours every plot of the report uses."""
    try:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex
    except ImportError:
        raise SparseSNNError(
            "the report draws its plots with matplotlib: pip install 'sparsesnn[plot]' (or matplotlib)"
        ) from None
    return tuple(to_hex(c) for c in colormaps["tab10"].colors)


def _series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.series, []).append(g)
    for gs in out.values():
        gs.sort(key=lambda g: g.stats["density_mean"] if g.stats["density_mean"] is not None else g.target_density)
    return out


def _pct(v: float | None) -> float:
    return float("nan") if v is None else v * 100


def _scale(v: float | None, by: float) -> float:
    return float("nan") if v is None else v / by


def plot_accuracy(
    groups: Sequence[Group],
    x_field: str,
    x_scale: float,
    xlabel: str,
    path: Path,
    reference: Sequence[dict[str, Any]] = (),
    ref_field: str | None = None,
    title: str = "",
) -> Any:
    """Accuracy (mean ± std) against ``x_field`` (mean ± std), one curve per series; dense as a dashed level.

    Returns the matplotlib ``Figure`` (already written to ``path``).
    """
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    series = _series(groups)
    styles = series_styles(list(series))
    xs_all: list[float] = []
    for name, gs in series.items():
        xs = [_scale(g.stats[f"{x_field}_mean"], x_scale) for g in gs]
        xe = [_scale(g.stats[f"{x_field}_std"], x_scale) for g in gs]
        ys = [_pct(g.stats["test_acc_mean"]) for g in gs]
        ye = [_pct(g.stats["test_acc_std"]) for g in gs]
        xs_all += [x for x in xs if math.isfinite(x)]
        color, marker = styles[name]
        ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker=marker, ms=6, capsize=3, lw=1.5, color=color, label=name)
        if gs[0].method == "dense" and len(gs) == 1 and math.isfinite(ys[0]):
            ax.axhline(ys[0], color=color, ls="--", lw=1, alpha=0.6)
    if ref_field is not None:
        for i, pt in enumerate(p for p in reference if p.get(ref_field) is not None):
            x, y = float(pt[ref_field]), float(pt["accuracy"])
            xs_all.append(x)
            ax.scatter(
                [x],
                [y],
                marker="*",
                s=180,
                color="black",
                edgecolor="gold",
                zorder=5,
                label="reported (papers)" if i == 0 else None,
            )
            ax.annotate(f"{pt['label']} (reported)", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    positive = [x for x in xs_all if x > 0]
    if positive and max(positive) / min(positive) > 4:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    legend_below(fig, ax)
    fig.savefig(path)
    return fig


#: a legend label longer than this is wrapped (about the width of the 7.5-inch figure at 8 pt)
LEGEND_WRAP = 100


def legend_below(fig: Any, ax: Any) -> None:
    """The legend under the axes, where it can hide no point and no label is cut off.

    Labels that name a series' settings run to 200 characters; they are wrapped at ``LEGEND_WRAP`` characters and
    the figure grows by one text line per legend row, so that the axes keep their height. Short labels share two
    columns.
    """
    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        return
    wrapped = [textwrap.fill(label, LEGEND_WRAP, subsequent_indent="    ") for label in labels]
    ncols = 2 if len(labels) > 4 and max(map(len, labels)) <= LEGEND_WRAP // 2 - 4 else 1
    lines = sum(w.count("\n") + 1 for w in wrapped)
    fig.set_figheight(fig.get_figheight() + 0.17 * math.ceil(lines / ncols) + 0.2)
    fig.legend(handles, wrapped, loc="outside lower center", ncols=ncols, fontsize=8)


def _representatives(groups: Sequence[Group]) -> list[tuple[str, Group, RunData]]:
    """Per series, the sparsest group's lowest-seed run."""
    out = []
    for name, gs in _series(groups).items():
        g = min(gs, key=lambda g: g.target_density)
        out.append((name, g, g.runs[0]))
    return out


def _panels(n: int) -> tuple[int, int]:
    cols = min(3, max(1, n))
    return math.ceil(n / cols), cols


def panel_title(text: str, panel_width_in: float) -> str:
    """``text`` wrapped to the width of a panel ``panel_width_in`` inches wide at 9 pt (12 characters per inch),
    so that the titles of neighbouring panels, which name a series' settings, do not run into each other."""
    return textwrap.fill(text, max(20, int(panel_width_in * 12)))


def _panel_height(base_in: float, titles: Sequence[str]) -> float:
    """A panel's height: ``base_in`` for a one-line title, 0.16 inch more for each further line of the longest."""
    return base_in + 0.16 * max((t.count("\n") for t in titles), default=0)


def plot_layer_density(groups: Sequence[Group], path: Path) -> Any:
    """Density of each masked layer over the epochs, one panel per series (its sparsest group, lowest seed).

    Returns the matplotlib ``Figure`` (already written to ``path``).
    """
    from matplotlib.ticker import MaxNLocator

    reps = [(n, g, r) for n, g, r in _representatives(groups) if any(m.get("layer_density") for m in r.metrics)]
    panel_width = 4.2
    titles = [
        panel_title(f"{name}, target {g.target_density:g}, seed {run.seed}", panel_width) for name, g, run in reps
    ]
    rows, cols = _panels(max(1, len(reps)))
    fig = _figure(panel_width * cols, _panel_height(3.2, titles) * rows)
    if not reps:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no masked layers in these runs (dense only)", ha="center", va="center")
        ax.set_axis_off()
    for i, (_name, _group, run) in enumerate(reps):
        ax = fig.add_subplot(rows, cols, i + 1)
        layers = list(dict.fromkeys(k for m in run.metrics for k in m.get("layer_density", {})))
        epochs = [m.get("epoch", j + 1) for j, m in enumerate(run.metrics)]
        for layer in layers:
            ax.plot(epochs, [_pct(m.get("layer_density", {}).get(layer)) for m in run.metrics], marker=".", label=layer)
        ax.plot(epochs, [_pct(m.get("density")) for m in run.metrics], color="black", lw=2, ls="--", label="overall")
        ax.set_title(titles[i], fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("connection density (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path)
    return fig


def plot_firing_rates(groups: Sequence[Group], path: Path) -> Any:
    """Firing rate per spiking layer at the last epoch (mean over seeds), one panel per series, a bar per group.

    Returns the matplotlib ``Figure`` (already written to ``path``).
    """
    series = _series(groups)
    panel_width = 4.6
    titles = [panel_title(name, panel_width) for name in series]
    rows, cols = _panels(len(series))
    fig = _figure(panel_width * cols, _panel_height(3.4, titles) * rows)
    for i, gs in enumerate(series.values()):
        ax = fig.add_subplot(rows, cols, i + 1)
        layers = list(dict.fromkeys(k for g in gs for r in g.runs for k in r.last.get("firing_rates", {})))
        width = 0.8 / len(gs)
        for j, g in enumerate(gs):
            means = [
                statistics.fmean(r.last.get("firing_rates", {}).get(layer, 0.0) for r in g.runs) for layer in layers
            ]
            ax.bar(
                [k + (j - (len(gs) - 1) / 2) * width for k in range(len(layers))],
                means,
                width=width,
                label="dense" if g.method == "dense" else f"target {g.target_density:g}",
            )
        ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("spikes / neuron / step")
        ax.set_title(titles[i], fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path)
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# table and page
# ----------------------------------------------------------------------------------------------------------------------
TABLE_COLUMNS = [
    "Method",
    "Density target",
    "Acc. %",
    "Acc. loss vs dense (pt)",
    "Conn. %",
    "SOPs (M)",
    "Energy (uJ)",
    "Params",
    "Runs",
]
#: inserted after "Acc. %" when some group holds out a validation split (``data.validation_samples``)
SELECTED_COLUMN = "Val-selected acc. %"


def _has_selection(groups: Sequence[Group]) -> bool:
    return any(g.stats.get("selected_test_acc_mean") is not None for g in groups)


def table_columns(groups: Sequence[Group]) -> list[str]:
    """:data:`TABLE_COLUMNS`, with :data:`SELECTED_COLUMN` after "Acc. %" when some group selects a checkpoint."""
    columns = list(TABLE_COLUMNS)
    if _has_selection(groups):
        columns.insert(columns.index("Acc. %") + 1, SELECTED_COLUMN)
    return columns


def _pm(mean: float | None, std: float | None, scale: float = 1.0, fmt: str = ".2f") -> str:
    """``mean ± std`` scaled and formatted (the std left out when zero or unknown)."""
    if mean is None:
        return "-"
    return f"{mean * scale:{fmt}}" + (f" ± {std * scale:{fmt}}" if std else "")


def table_rows(groups: Sequence[Group]) -> list[list[str]]:
    """The papers' table, one row per group, as text cells (see :func:`table_columns`)."""
    selection = _has_selection(groups)
    rows = []
    for g in groups:
        s = g.stats
        loss = s["acc_loss_vs_dense_pt"]
        selected = [_pm(s["selected_test_acc_mean"], s["selected_test_acc_std"], 100)] if selection else []
        rows.append(
            [
                g.series,
                f"{g.target_density:g}",
                _pm(s["test_acc_mean"], s["test_acc_std"], 100),
                *selected,
                "-" if loss is None else f"{loss:+.2f}",
                _pm(s["density_mean"], None, 100),
                _pm(s["sops_mean"], s["sops_std"], 1e-6, ".3g"),
                _pm(s["energy_uJ_mean"], s["energy_uJ_std"], 1, ".3g"),
                "-" if s["params_mean"] is None else f"{round(s['params_mean']):,}",
                str(s["n"]),
            ]
        )
    return rows


def markdown_table(groups: Sequence[Group]) -> str:
    columns = table_columns(groups)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(groups)]
    return "\n".join(lines) + "\n"


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _page(
    groups: Sequence[Group], runs: Sequence[RunData], drawn: Sequence[dict[str, Any]], plots: dict[str, str]
) -> str:
    datasets = sorted({r.dataset for r in runs})
    models = sorted({str(r.config.get("model.name", "?")) for r in runs})
    epochs = sorted({int(r.config.get("run.epochs", 0)) for r in runs})
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>sparsesnn report</title>',
        f"<style>{_CSS}</style></head><body>",
        "<h1>Sparse structure learning: results</h1>",
        f"<p>{len([r for r in runs if r.finished])} finished runs in {len(groups)} groups; dataset "
        f"{html.escape(', '.join(datasets))}; model {html.escape(', '.join(models))}; "
        f"{html.escape(', '.join(map(str, epochs)))} epochs. Generated {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        "<h2>Results</h2>",
        _html_table(table_columns(groups), table_rows(groups)),
        '<p class="note">Last-epoch numbers, mean ± sample std over seeds. Acc. loss: the dense group of the same '
        "settings minus this group, in points (positive = worse than dense). Conn.: measured density over the masked "
        "layers. SOPs: effective synaptic operations per sample (spikes x live fan-out; the analog first layer "
        "excluded). Energy: 0.9 pJ x SOPs + 4.6 pJ x MACs. Params: live Conv/Linear weights."
        + (
            f" {SELECTED_COLUMN}: test accuracy at each run's epoch of best validation accuracy (held-out training "
            "samples), the other columns stay last-epoch."
            if _has_selection(groups)
            else ""
        )
        + "</p>",
    ]
    captions = {
        "acc_vs_density": "Accuracy vs connection density (error bars: std over seeds; stars: the papers' reported "
        "points for this dataset, not reproduced here)",
        "acc_vs_sops": "Accuracy vs effective synaptic operations per sample",
        "acc_vs_energy": "Accuracy vs estimated energy per sample",
        "layer_density": "Density per layer over training (one run per method: its sparsest setting, lowest seed)",
        "firing_rates": "Firing rate per layer at the last epoch (mean over seeds)",
    }
    for key, file in plots.items():
        parts += [
            f"<h2>{html.escape(captions[key])}</h2>",
            f'<img src="{html.escape(file)}" alt="{html.escape(captions[key])}">',
        ]
    if drawn:
        parts += [
            "<h2>Reported points (the papers' claims)</h2>",
            _html_table(
                ["Label", "Dataset", "Acc. %", "Conn. %", "SOPs (M)", "Source"],
                [
                    [
                        str(p["label"]),
                        str(p["dataset"]),
                        f"{p['accuracy']:g}",
                        f"{p['density']:g}",
                        f"{p['sops']:g}" if p.get("sops") is not None else "-",
                        str(p.get("source", "")),
                    ]
                    for p in drawn
                ],
            ),
        ]
    run_rows = []
    for r, label in zip(runs, run_labels(runs), strict=True):
        last = r.last
        run_rows.append(
            [
                label,
                r.method,
                f"{r.target_density:g}",
                str(r.seed),
                str(len(r.metrics)),
                f"{last['test_acc'] * 100:.2f}" if "test_acc" in last else "-",
                f"{last['density'] * 100:.2f}" if "density" in last else "-",
                f"{(r.summary or {}).get('train_time_s', 0.0):.1f}" if r.finished else "-",
                "finished" if r.finished else "not finished: not counted",
                str(r.run_dir),
            ]
        )
    parts += [
        "<h2>Runs</h2>",
        _html_table(
            ["Run", "Method", "Target", "Seed", "Epochs", "Acc. %", "Conn. %", "Train s", "Status", "Directory"],
            run_rows,
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path, reference: str | Path | None = None) -> Path:
    """Write ``index.html``, the PNG plots, ``results.json`` and ``table.md`` into ``out_dir``; returns index.html.

    ``run_dirs`` may hold run directories, sweep directories or directories of runs.
    """
    out = Path(out_dir)
    runs = [read_run(d) for d in expand_run_dirs(run_dirs)]
    for r in runs:
        if not r.finished:
            print(
                f"sparsesnn report: {r.run_dir} is not finished (no summary.json): listed, not counted", file=sys.stderr
            )
    groups = group_runs(runs)
    if not groups:
        raise SparseSNNError("no finished run to report (every run lacks summary.json)")
    datasets = {r.dataset for r in runs if r.finished}
    points = load_reference(reference) if reference is not None else []
    drawn = [p for p in points if str(p["dataset"]) in datasets]
    out.mkdir(parents=True, exist_ok=True)
    ref_density = [{**p, "x": p["density"]} for p in drawn]
    ref_sops = [{**p, "x": p["sops"]} for p in drawn if p.get("sops") is not None]
    plot_accuracy(
        groups,
        "density",
        0.01,
        "connection density (%, masked layers)",
        out / PLOTS["acc_vs_density"],
        ref_density,
        "x",
        "Accuracy vs density",
    )
    plot_accuracy(
        groups,
        "sops",
        1e6,
        "effective SOPs per sample (M)",
        out / PLOTS["acc_vs_sops"],
        ref_sops,
        "x",
        "Accuracy vs synaptic operations",
    )
    plot_accuracy(
        groups,
        "energy_uJ",
        1.0,
        "energy per sample (uJ, 0.9 pJ/SOP + 4.6 pJ/MAC)",
        out / PLOTS["acc_vs_energy"],
        title="Accuracy vs energy",
    )
    plot_layer_density(groups, out / PLOTS["layer_density"])
    plot_firing_rates(groups, out / PLOTS["firing_rates"])
    results = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "columns": table_columns(groups),
        "groups": [
            {
                "series": g.series,
                "label": g.label,
                "method": g.method,
                "dataset": g.dataset,
                "target_density": g.target_density,
                **g.stats,
                "runs": [str(r.run_dir) for r in g.runs],
            }
            for g in groups
        ],
        "reference_drawn": drawn,
        "runs": [
            {
                "run_dir": str(r.run_dir),
                "label": label,
                "name": r.name,
                "method": r.method,
                "target_density": r.target_density,
                "seed": r.seed,
                "dataset": r.dataset,
                "finished": r.finished,
                **{k: get(r) for k, get in _STAT_FIELDS.items()},
            }
            for r, label in zip(runs, run_labels(runs), strict=True)
        ],
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "table.md", markdown_table(groups))
    index = out / "index.html"
    atomic_write_text(index, _page(groups, runs, drawn, PLOTS))
    return index
