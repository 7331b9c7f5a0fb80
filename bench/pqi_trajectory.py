"""The density trajectory of PQ-index runs, round by round, from their ``metrics.jsonl``.

    python bench/pqi_trajectory.py bench/out/mnist_dense-5ep/pq_neuron-wise bench/out/mnist_dense-5ep/pq_layer-wise

Each epoch line of a ``pqi`` run carries the round it ran (``pqi``: per layer the PQ index, the retained-weight bound
r, the rewiring ratio c, the active weights before and after, the pruned and regrown counts). This prints, per run and
round, the epoch, the global density over the masked layers after the round, and per layer ``density (PQ, c)``,
as JSON and a Markdown table; ``--json FILE`` writes the JSON too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchutil import emit

from sparsesnn.train.rundir import CONFIG_FILE, read_metrics, read_summary


def trajectory(run_dir: Path) -> dict[str, Any]:
    """Every logged round of one run, once each (epochs without a round repeat the latest one)."""
    lines = read_metrics(run_dir)
    if not lines:
        raise SystemExit(f"{run_dir}: metrics.jsonl is empty")
    rounds: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for m in lines:
        entry = m.get("pqi")  # the latest round as of this epoch: epochs without a round repeat it
        if not entry or not entry.get("layers") or entry.get("at") in seen:
            continue
        seen.add(entry.get("at"))
        layers = entry["layers"]
        before = sum(v["active_before"] for v in layers.values())
        after = sum(v["active"] for v in layers.values())
        rounds.append(
            {
                "round": len(rounds) + 1,
                "epoch": m["epoch"],
                "density": m.get("density"),
                "test_acc": m.get("test_acc"),
                "active_before": before,
                "active": after,
                "layers": {
                    name: {k: v[k] for k in ("density", "pq", "bound", "ratio", "pruned", "regrown")}
                    for name, v in layers.items()
                },
            }
        )
    return {
        "run": str(run_dir),
        "scope": _scope(run_dir),
        "final_density": lines[-1].get("density"),
        "final_test_acc": lines[-1].get("test_acc"),
        "finished": read_summary(run_dir) is not None,
        "rounds": rounds,
    }


def _scope(run_dir: Path) -> str:
    import tomllib

    cfg = tomllib.loads((run_dir / CONFIG_FILE).read_text())
    return str(cfg.get("sparse", {}).get("params", {}).get("scope", "neuron"))


def markdown(result: dict[str, Any]) -> str:
    out: list[str] = []
    for run in result["runs"]:
        layers = sorted({name for r in run["rounds"] for name in r["layers"]})
        out.append(f"### {run['run']} ({run['scope']}-wise)\n")
        out.append(
            "| round | epoch | density % (masked) | test acc. % | "
            + " | ".join(f"{name}: density % (PQ, c)" for name in layers)
            + " |"
        )
        out.append("|" + "---|" * (4 + len(layers)))
        for r in run["rounds"]:
            cells = []
            for name in layers:
                v = r["layers"].get(name)
                cells.append("-" if v is None else f"{v['density'] * 100:.1f} ({v['pq']:.3f}, {v['ratio']:.3f})")
            acc = f"{r['test_acc'] * 100:.2f}" if r["test_acc"] is not None else "-"
            head = f"| {r['round']} | {r['epoch']} | {r['density'] * 100:.2f} | {acc} | "
            out.append(head + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories of pqi runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = {"runs": [trajectory(d) for d in args.run_dirs]}
    emit(result, markdown(result), args.json)
    return result


if __name__ == "__main__":
    main()
