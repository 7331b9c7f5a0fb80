"""The papers' table of the groups, as Markdown (``table.md``) and HTML, and ``results.json``.

Table columns:

* *Acc. %*: final test accuracy, mean ± std over seeds.
* *Val-selected acc. %* (only when some run holds out ``data.validation_samples``): test accuracy of the checkpoint
  chosen on the validation split (``selected_test_acc`` of ``summary.json``), mean ± std; ``-`` for groups without.
* *Acc. loss vs dense (pt)*: accuracy of the dense group with the same non-``[sparse]`` settings minus this
  group's, in percentage points (positive = the sparse network is worse); ``-`` where the runs hold no such group.
* *Conn. %*: measured connection density over the masked layers (``density`` of ``metrics.jsonl``).
* *MAC %*: the fraction of the masked layers' dense multiply-accumulates per sample that survives (``mac_density``;
  what ``sparse.budget = "macs"`` holds at the target; ``-`` for runs from before it was logged).
* *SOPs (M)*: effective synaptic operations per sample in millions (spikes x live fan-out; the analog first layer
  is counted as MACs, not here). *Energy (uJ)*: 0.9 pJ x SOPs + 4.6 pJ x MACs per sample.
* *Params*: live weights of every Conv/Linear layer (masks applied; biases and norms not counted).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from sparsesnn.experiments.report.groups import STAT_FIELDS, Group, run_labels
from sparsesnn.experiments.report.runs import RunData

TABLE_COLUMNS = [
    "Method",
    "Density target",
    "Acc. %",
    "Acc. loss vs dense (pt)",
    "Conn. %",
    "MAC %",
    "SOPs (M)",
    "Energy (uJ)",
    "Params",
    "Runs",
]
#: inserted after "Acc. %" when some group holds out a validation split (``data.validation_samples``)
SELECTED_COLUMN = "Val-selected acc. %"


def has_selection(groups: Sequence[Group]) -> bool:
    return any(g.stats.get("selected_test_acc_mean") is not None for g in groups)


def table_columns(groups: Sequence[Group]) -> list[str]:
    """:data:`TABLE_COLUMNS`, with :data:`SELECTED_COLUMN` after "Acc. %" when some group selects a checkpoint."""
    columns = list(TABLE_COLUMNS)
    if has_selection(groups):
        columns.insert(columns.index("Acc. %") + 1, SELECTED_COLUMN)
    return columns


def _pm(mean: float | None, std: float | None, scale: float = 1.0, fmt: str = ".2f") -> str:
    """``mean ± std`` scaled and formatted (the std left out when zero or unknown)."""
    if mean is None:
        return "-"
    return f"{mean * scale:{fmt}}" + (f" ± {std * scale:{fmt}}" if std else "")


def table_rows(groups: Sequence[Group]) -> list[list[str]]:
    """The papers' table, one row per group, as text cells (see :func:`table_columns`)."""
    selection = has_selection(groups)
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
                _pm(s["mac_density_mean"], None, 100),
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


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def results_json(groups: Sequence[Group], runs: Sequence[RunData], drawn: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The content of ``results.json``: the table's columns, every group with its statistics, the reported points
    drawn, and every run (finished or not) with its last-epoch numbers."""
    return {
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
                **{k: get(r) for k, get in STAT_FIELDS.items()},
            }
            for r, label in zip(runs, run_labels(runs), strict=True)
        ],
    }
