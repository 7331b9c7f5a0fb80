"""Does SD-SNN's ghost phase cost accuracy? A probe on a trained SD-SNN run.

From the run's last checkpoint, train ``--steps`` more batches at a fixed learning rate twice: once with the ghosts
armed (regeneration on: pruned synapses and neurons learn during the "epoch" and are removed at its end, as in the
authors' code) and once without (regeneration off: the structure alone trains). Report the test accuracy of

* the working network with the ghosts still live (what the optimiser trained),
* the structure after the ghosts are removed (what the engine evaluates at an epoch end),
* the structure trained without ghosts.

If removing ghosts cost accuracy, the second would fall below the first; if training with ghosts hurt the structure,
the second would fall below the third. The probe skips the epoch-end regeneration and pruning themselves (it
removes the ghosts with ``SDSNN._apply_structure``), so it isolates the ghost phase.

    python bench/sdsnn_ghost_probe.py bench/out/sdsnn_mnist_30ep_tail03_seed3 --steps 200 --lr 1e-3 \
        --json bench/out/sdsnn_ghost_probe.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchutil import emit, loadavg, machine

from sparsesnn.sparse.methods.sdsnn import SDSNN
from sparsesnn.train.trainer import BatchSeed, Trainer, epoch_order, iterate_batches, to_time_major

#: the data order of the probe's batches: an epoch index no run of the recipe reaches
PROBE_EPOCH = 99


def probe(run_dir: Path, steps: int, lr: float, ghosts: bool) -> dict[str, Any]:
    """Train ``steps`` batches from the run's last state with or without ghosts; test accuracies before and after
    the ghosts are removed (equal without ghosts)."""
    trainer = Trainer.resume(run_dir, quiet=True)
    learner = trainer.learner
    if not isinstance(learner, SDSNN):
        raise SystemExit(f"{run_dir} is not an SD-SNN run (sparse.method = {trainer.config.sparse.method!r})")
    learner.regeneration = ghosts
    if ghosts and learner.ranges:  # the run is over, so step() arms no ghosts for an epoch after it: arm them here
        with torch.no_grad():
            learner._arm_ghosts()
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    cfg = trainer.config
    torch.manual_seed(0)
    order = epoch_order(len(trainer.data.train), cfg.run.seed, PROBE_EPOCH, shuffle=True)  # type: ignore[arg-type]
    batches = iterate_batches(
        trainer.data.train,
        order[: steps * cfg.data.batch_size],
        cfg.data.batch_size,
        0,
        0,
        BatchSeed((cfg.run.seed, PROBE_EPOCH), (1,)),
    )
    trainer.model.train()
    for _b, _idx, x, y in batches:  # the loop of Trainer._train_epoch, one process
        x, y = x.to(trainer.device), y.to(trainer.device)
        loss = trainer.loss_fn(trainer.train_model(to_time_major(x, trainer.info, trainer.encoder)), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        learner.step()
    armed = learner.ghost
    working = trainer.evaluate(monitors=False)["test_acc"]
    with torch.no_grad():
        if learner.ghost:
            learner._apply_structure()  # the epoch end's last act, without its regeneration and pruning
    structure = trainer.evaluate(monitors=False)["test_acc"]
    return {"ghosts": ghosts, "armed": armed, "working_test_acc": working, "structure_test_acc": structure}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished (or interrupted) SD-SNN run directory")
    parser.add_argument("--steps", type=int, default=200, help="training batches per variant")
    parser.add_argument("--lr", type=float, default=1e-3, help="the fixed learning rate of those batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.lr <= 0:
        parser.error("--steps must be >= 1 and --lr > 0")
    torch.set_num_threads(args.threads)
    load_start = loadavg()
    rows = [probe(args.run_dir, args.steps, args.lr, ghosts) for ghosts in (True, False)]
    result = {
        "run_dir": str(args.run_dir),
        "steps": args.steps,
        "lr": args.lr,
        "variants": rows,
        "machine": machine(load_start, malloc_tuned=False),
    }
    lines = [
        "| variant | ghosts armed | test % working net | test % structure |",
        "|---|---|---|---|",
    ]
    for r in rows:
        name = "with ghosts" if r["ghosts"] else "without ghosts"
        lines.append(
            f"| {name} | {r['armed']} | {100 * r['working_test_acc']:.2f} | {100 * r['structure_test_acc']:.2f} |"
        )
    emit(result, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
