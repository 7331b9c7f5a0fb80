"""The report's plots (PNG, beside ``index.html``), drawn with matplotlib, which is imported only when a plot is drawn
(it is the ``plot`` extra).

Accuracy vs connection density per method with error bars (and the papers' reported points for the same dataset,
from ``--reference``), accuracy vs SOPs and vs energy (:func:`plot_accuracy`), density per layer over the epochs
(:func:`plot_layer_density`: one representative run per method, its sparsest group, lowest seed), firing rate per
layer at the last epoch (:func:`plot_firing_rates`: mean over seeds). :func:`draw_plots` draws all five into
:data:`PLOTS`.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparsesnn.core.errors import SparseSNNError
from sparsesnn.experiments.report.groups import Group
from sparsesnn.experiments.report.runs import RunData

#: plot -> its PNG file, beside index.html
PLOTS = {
    "acc_vs_density": "acc_vs_density.png",
    "acc_vs_sops": "acc_vs_sops.png",
    "acc_vs_energy": "acc_vs_energy.png",
    "layer_density": "layer_density.png",
    "firing_rates": "firing_rates.png",
}


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


def draw_plots(groups: Sequence[Group], out: Path, drawn: Sequence[dict[str, Any]] = ()) -> None:
    """Draw the five plots of :data:`PLOTS` into ``out``; ``drawn``: the reported points of the runs' datasets."""
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
