"""How many hidden neurons SD-SNN's rate schedule alone prunes: the released code's schedule beside the run's.

SD-SNN prunes ``floor(n * rho)`` of a layer's ``n`` neurons (:meth:`~sparsesnn.sparse.methods.sdsnn.SDSNN.prune_count`)
at each pruning epoch ``e > 2N`` (the lowest-scoring; already-pruned neurons score lowest, so the count is
cumulative), then raises ``rho`` by
:meth:`sparsesnn.sparse.methods.sdsnn.SDSNN.rate_increment` with ``alive_l / alive_{l+1}``. This script replays
that loop for the last neuron-pruned layer (the code's hidden FC before the readout) with the library's own
``SDSNN`` learner — no training, no regeneration — once for the code's setting (``N = 18``, 600 epochs, pruning at
every epoch end, the last included: ``final_change``) and once per run length asked for, with the library's default
(no pruning at the last epoch end; ``--final-change`` replays those runs with the code's last pruning too), so the
pruned fraction a faithful port can reach on a net is known before a run is spent on it.

    python bench/sdsnn_rate_replay.py --run 15:2 --run 30:3 --run 5:1 --run 30:3:0.03 \\
        --json bench/out/sdsnn_rate_replay.json

``--run E:N`` is a run of ``E`` epochs with the epoch constant ``N`` (the recipe's defaults for everything else);
``--run E:N:T`` also sets ``last_tail_increment = T`` (a late rate of one's own instead of the code's total), e.g.
``--run 30:3:0.03``; ``--run E:N:T:S`` also sets ``stop_at = S`` (no pruning in the last epochs), e.g.
``--run 30:3:0.045:0.85``, and ``--run 30:3::0.85`` keeps the default late rate.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchutil import emit
from torch import nn

from sparsesnn.sparse.methods.sdsnn import CODE_EPOCHS, CODE_N, SDSNN


def replay(hidden: int, classes: int, epochs: int, n: int, **params: Any) -> dict[str, Any]:
    """The pruned count of the hidden layer after each pruning epoch of an ``epochs``-epoch run with ``N = n``
    (``params``: the learner's settings, e.g. ``last_tail_increment``, ``stop_at``, ``final_change``)."""
    model = nn.Sequential(nn.Linear(4, hidden), nn.Linear(hidden, classes))
    learner = SDSNN(model, density=1.0, N=n, total_epochs=epochs, steps_per_epoch=1, **params)  # no steps: a replay
    name = learner.last_layer
    rho = learner.rho[name]
    pruned = 0
    trace = []
    for epoch in range(epochs):  # 0-based, as on_epoch_end: pruning for e > 2N, before the last epoch or stop_at
        if not learner.develops(epoch):
            continue
        pruned = max(pruned, learner.prune_count(hidden, rho))
        rho += learner.rate_increment(name, epoch, hidden - pruned, classes)
        trace.append({"epoch": epoch + 1, "pruned": pruned, "rho_after": rho})
    return {
        "epochs": epochs,
        "N": n,
        "pruning_epochs": len(trace),
        "last_tail_increment": learner.last_tail_increment,
        "pruned": pruned,
        "pruned_fraction": pruned / hidden,
        "trace": trace,
    }


def _run_spec(text: str) -> tuple[int, int, float | None, float | None]:
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3, 4):
            raise ValueError(text)
        epochs, n = int(parts[0]), int(parts[1])
        tail = float(parts[2]) if len(parts) >= 3 and parts[2] else None
        stop = float(parts[3]) if len(parts) == 4 else None
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--run takes EPOCHS:N, EPOCHS:N:TAIL_INCREMENT or EPOCHS:N:[TAIL_INCREMENT]:STOP_AT, got {text!r}"
        ) from err
    if epochs <= 2 * n + 2:
        raise argparse.ArgumentTypeError(
            f"--run {text}: no pruning epoch (the first ends epoch 2N + 2, 1-based, and must not be the last)"
        )
    if tail is not None and not 0.0 <= tail <= 1.0:
        raise argparse.ArgumentTypeError(f"--run {text}: the tail increment must be in [0, 1]")
    if stop is not None and not 0.0 <= stop <= 1.0:
        raise argparse.ArgumentTypeError(f"--run {text}: stop_at must be in [0, 1]")
    return epochs, n, tail, stop


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=512, help="neurons of the last neuron-pruned layer")
    p.add_argument("--classes", type=int, default=10, help="neurons of the readout after it")
    p.add_argument(
        "--run",
        type=_run_spec,
        action="append",
        default=[],
        metavar="E:N[:T[:S]]",
        help="a run of E epochs with N, optionally last_tail_increment T and stop_at S "
        "(repeatable; default 15:2, 30:3)",
    )
    p.add_argument(
        "--final-change",
        action="store_true",
        help="replay the --run rows with a pruning at the last epoch end too, as the code (and the library before "
        "the rule that no structural change follows the last optimiser step); not with a stop_at",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    runs = args.run or [(15, 2, None, None), (30, 3, None, None)]
    if args.final_change and any(stop is not None for *_, stop in runs):
        p.error("--final-change prunes at the last epoch end and a stop_at stops earlier: give one of them")
    rows = {"code (600 epochs, N = 18)": replay(args.hidden, args.classes, CODE_EPOCHS, CODE_N, final_change=True)}
    for epochs, n, tail, stop in runs:  # tail None: the learner's default, the code's total over the run's tail
        label = f"{epochs} epochs, N = {n}" + ("" if tail is None else f", tail {tail:g} (ours)")
        label += "" if stop is None else f", stop_at {stop:g} (ours)"
        label += ", last epoch pruned (final_change)" if args.final_change else ""
        rows[label] = replay(
            args.hidden, args.classes, epochs, n, last_tail_increment=tail, stop_at=stop, final_change=args.final_change
        )
    result = {"hidden": args.hidden, "classes": args.classes, "rows": rows}
    lines = [
        f"## SD-SNN rate schedule alone: hidden layer of {args.hidden} before a {args.classes}-neuron readout",
        "",
        "| schedule | pruning epochs | tail increment | neurons pruned | pruned % |",
        "|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['pruning_epochs']} | {r['last_tail_increment']:.4g} | {r['pruned']} |"
            f" {r['pruned_fraction'] * 100:.1f} |"
        )
    emit(result, "\n".join(lines), args.json)
    return result


if __name__ == "__main__":
    main()
