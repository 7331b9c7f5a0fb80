"""The report's entry, :func:`build_report`, and its HTML page (``index.html``: the table, the plots, the reported
points, every run).

    sparsesnn report runs/sweeps/mnist_dense [more run or sweep dirs...] [--out DIR] [--reference FILE]
"""

from __future__ import annotations

import html
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparsesnn.core.errors import SparseSNNError
from sparsesnn.core.files import atomic_write_text
from sparsesnn.experiments.report.groups import Group, group_runs, run_labels
from sparsesnn.experiments.report.plots import PLOTS, draw_plots
from sparsesnn.experiments.report.reference import load_reference
from sparsesnn.experiments.report.runs import RunData, expand_run_dirs, read_run
from sparsesnn.experiments.report.tables import (
    SELECTED_COLUMN,
    has_selection,
    html_table,
    markdown_table,
    results_json,
    table_columns,
    table_rows,
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def render_page(
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
        html_table(table_columns(groups), table_rows(groups)),
        '<p class="note">Last-epoch numbers, mean ± sample std over seeds. Acc. loss: the dense group of the same '
        "settings minus this group, in points (positive = worse than dense). Conn.: measured density over the masked "
        "layers. SOPs: effective synaptic operations per sample (spikes x live fan-out; the analog first layer "
        "excluded). Energy: 0.9 pJ x SOPs + 4.6 pJ x MACs. Params: live Conv/Linear weights."
        + (
            f" {SELECTED_COLUMN}: test accuracy at each run's epoch of best validation accuracy (held-out training "
            "samples), the other columns stay last-epoch."
            if has_selection(groups)
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
            html_table(
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
        html_table(
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
    draw_plots(groups, out, drawn)
    atomic_write_text(out / "results.json", json.dumps(results_json(groups, runs, drawn), indent=2) + "\n")
    atomic_write_text(out / "table.md", markdown_table(groups))
    index = out / "index.html"
    atomic_write_text(index, render_page(groups, runs, drawn, PLOTS))
    return index
