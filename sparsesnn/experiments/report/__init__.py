"""A static HTML report of finished runs: plots, a table in the papers' format, ``results.json`` and ``table.md``.

    sparsesnn report runs/sweeps/mnist_dense [more run or sweep dirs...] [--out DIR] [--reference FILE]

One module per job:

* :mod:`.runs`: run directories read as the engine wrote them (``config.toml``, ``metrics.jsonl``,
  ``summary.json``); runs without ``summary.json`` (failed or unfinished) are listed but not counted.
* :mod:`.groups`: runs that differ only in their seed form a group (mean and sample std over the seeds, at each
  run's last epoch); groups that differ only in ``sparse.density`` form a series; labels say what differs.
* :mod:`.reference`: the papers' reported points (``--reference``), drawn beside the runs of their dataset.
* :mod:`.plots`: the PNG plots (matplotlib, the ``plot`` extra, imported only to draw).
* :mod:`.tables`: the table (``table.md``, the page's HTML table) and ``results.json``.
* :mod:`.page`: ``index.html`` and :func:`build_report`, which writes all of it.
"""

from sparsesnn.experiments.report.groups import STAT_FIELDS, Group, describe, group_runs, run_labels
from sparsesnn.experiments.report.page import build_report, render_page
from sparsesnn.experiments.report.plots import (
    LEGEND_WRAP,
    PLOTS,
    draw_plots,
    legend_below,
    panel_title,
    plot_accuracy,
    plot_firing_rates,
    plot_layer_density,
    series_styles,
)
from sparsesnn.experiments.report.reference import ReferencePoint, load_reference
from sparsesnn.experiments.report.runs import IGNORED_KEYS, RunData, expand_run_dirs, read_run, recipe_settings
from sparsesnn.experiments.report.tables import (
    SELECTED_COLUMN,
    TABLE_COLUMNS,
    markdown_table,
    results_json,
    table_columns,
    table_rows,
)

__all__ = [
    "IGNORED_KEYS",
    "LEGEND_WRAP",
    "PLOTS",
    "SELECTED_COLUMN",
    "STAT_FIELDS",
    "TABLE_COLUMNS",
    "Group",
    "ReferencePoint",
    "RunData",
    "build_report",
    "describe",
    "draw_plots",
    "expand_run_dirs",
    "group_runs",
    "legend_below",
    "load_reference",
    "markdown_table",
    "panel_title",
    "plot_accuracy",
    "plot_firing_rates",
    "plot_layer_density",
    "read_run",
    "recipe_settings",
    "render_page",
    "results_json",
    "run_labels",
    "series_styles",
    "table_columns",
    "table_rows",
]
