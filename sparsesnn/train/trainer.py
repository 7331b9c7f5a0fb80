"""The training loop with exact resume: epochs, evaluation, model selection, checkpoints and stop signals.

A run directory holds ``config.toml`` (the resolved config), ``metrics.jsonl`` (one JSON line per epoch),
``summary.json`` and ``checkpoint.pt`` (written atomically at the end of every epoch, on a stop signal, and optionally
every N steps); with a validation split also ``selected.pt``, the state of the epoch model selection chose.

:class:`Trainer` builds its parts with :func:`~sparsesnn.train.components.build_components`, runs each batch through
:class:`~sparsesnn.train.batch_step.BatchStep`, evaluates with :func:`~sparsesnn.train.evaluation.evaluate_model`
and reads a run back with the pieces of :mod:`~sparsesnn.train.run_reader`; what stays here is the loop around them.

Determinism and exact resume: every source of randomness is derived from ``(seed, epoch, batch)`` (the named streams
of :mod:`~sparsesnn.train.batching`): the shuffling order of an epoch comes from a generator seeded with ``(seed,
epoch)``, and before each training step the global torch RNG (dropout) and a per-batch generator (augmentation,
Poisson encoding) are seeded from ``(seed, epoch, batch)``. A checkpoint therefore needs no RNG state: resuming at
(epoch, batch) replays exactly the same stream, and the resumed run writes the same ``metrics.jsonl`` as an
uninterrupted one (timing fields aside).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from sparsesnn.core.collectives import barrier, check_identical
from sparsesnn.core.errors import CheckpointError
from sparsesnn.core.files import atomic_write_text
from sparsesnn.train.batch_step import BatchStep
from sparsesnn.train.batching import (
    TRAIN_BATCH_STREAM,
    Batch,
    BatchSeed,
    epoch_order,
    loader_batches,
)
from sparsesnn.train.batching import iterate_batches as iterate_batches
from sparsesnn.train.batching import to_time_major as to_time_major
from sparsesnn.train.checkpoint import load_checkpoint, save_checkpoint, write_error
from sparsesnn.train.components import apply_process_settings, build_components
from sparsesnn.train.config import Config, SelectAmong
from sparsesnn.train.distributed import env_context, init_from_env
from sparsesnn.train.evaluation import evaluate_model
from sparsesnn.train.factory import resolve_device
from sparsesnn.train.losses import LossFn
from sparsesnn.train.run_reader import CHECKPOINTS as CHECKPOINTS
from sparsesnn.train.run_reader import RELOCATABLE_KEYS as RELOCATABLE_KEYS
from sparsesnn.train.run_reader import check_checkpoint_config, checkpoint_path, read_run_config
from sparsesnn.train.run_reader import inference_device as inference_device
from sparsesnn.train.rundir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    PREVIOUS_PREFIX,
    SELECTED_FILE,
    SUMMARY_FILE,
    RunDirLock,
    run_files_in,
    set_aside,
)
from sparsesnn.train.rundir import CONFIG_FILE as CONFIG_FILE
from sparsesnn.train.tensorboard import open_tensorboard

#: fields of a metrics line that measure wall time and so differ between otherwise identical runs
TIMING_KEYS = frozenset({"time_s", "samples_per_s", "compile_s"})


#: the signals that stop a run cleanly: Ctrl-C, a scheduler's preemption or time limit (SIGTERM), SLURM's warning
#: before the time limit (SIGUSR1, with ``sbatch --signal=USR1@<seconds>``)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class RunInterrupted(KeyboardInterrupt):
    """Raised after a stop signal (Ctrl-C, SIGTERM, SIGUSR1) once the checkpoint is safely written; ``signum`` is the
    signal, and the command line exits with ``128 + signum`` (130, 143, 138), the shell's convention."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


# ----------------------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class EpochProgress:
    """Running sums of the epoch in progress (saved in mid-epoch checkpoints)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    steps: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen, "steps": self.steps}


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    progress: EpochProgress = field(default_factory=EpochProgress)


class Trainer:
    """Builds everything a config names and trains it into ``run_dir``.

    >>> # Trainer(config, "runs/demo").fit()  -> summary dict; Trainer.resume("runs/demo").fit() continues
    """

    def __init__(self, config: Config, run_dir: str | Path, *, quiet: bool = False) -> None:
        """Join the process group torchrun set up (if any), apply the config's process-wide settings
        (:func:`~sparsesnn.train.components.apply_process_settings`) and build every part of the run."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.dist, self.device = init_from_env(resolve_device(config.run.device))
        apply_process_settings(config.run, self.device)
        parts = build_components(config, self.device, self.dist)
        self.data = parts.data
        self.info = parts.info
        self.model = parts.model
        self.encoder = parts.encoder
        self.optimizer = parts.optimizer
        self.steps_per_epoch = parts.steps_per_epoch
        self.total_steps = parts.total_steps
        self.learner = parts.learner
        self.scheduler = parts.scheduler
        self.distiller = parts.distiller
        self.train_model = parts.train_model
        self.step = parts.step
        self.batch_step = BatchStep(
            self.step,
            self.info,
            self.encoder,
            parts.loss_fn,
            self.distiller,
            self.dist,
            self.device,
            config.run.seed,
            last_checkpoint=lambda: (
                f"The last good checkpoint is kept at {self.run_dir / CHECKPOINT_FILE} ({self._saved_at})."
            ),
        )
        self.topology_checks = 0
        self.state = TrainState()
        self._interrupt = threading.Event()
        self._stop_signal: int = signal.SIGINT  # the signal that set _interrupt (request_stop: as Ctrl-C)
        self._saved_at = "none written yet"
        self.restored_from = CHECKPOINT_FILE
        self._compile_reported = False  # compile_s written to an epoch record
        self._compile_logged = False

    @property
    def loss_fn(self) -> LossFn:
        """The training loss (also the evaluation's); setting it changes what the next step trains on."""
        return self.batch_step.loss_fn

    @loss_fn.setter
    def loss_fn(self, fn: LossFn) -> None:
        self.batch_step.loss_fn = fn

    # -- construction from a run directory --------------------------------------------------------------------------
    @classmethod
    def resume(
        cls, run_dir: str | Path, *, quiet: bool = False, checkpoint: str = "last", device: str | None = None
    ) -> Trainer:
        """Rebuild the trainer from ``run_dir/config.toml`` and restore a checkpoint of the run.

        ``checkpoint="last"`` (``checkpoint.pt``) continues training exactly; ``"selected"`` (``selected.pt``, the
        epoch of best validation accuracy) is for evaluation and export only: :meth:`fit` refuses it.

        ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``) replaces the run's ``run.device``: a run written
        on CUDA continues on the CPU and the other way round. The checkpoint is read to the CPU and every state is
        restored where it lives (:mod:`sparsesnn.train.checkpoint`); a resumed run that goes on training records the
        new device in its ``config.toml``. To evaluate or export a run without training it, read it with
        :func:`~sparsesnn.train.run_reader.read_run`.
        """
        rd = Path(run_dir)
        config = read_run_config(rd, device)
        path = checkpoint_path(rd, checkpoint)
        state = load_checkpoint(path)
        trainer = cls(config, rd, quiet=quiet)
        trainer.load_state(state)
        trainer.restored_from = path.name
        return trainer

    # -- state ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "epoch": self.state.epoch,
            "batch": self.state.batch,
            "global_step": self.state.global_step,
            "history": self.state.history,
            "progress": self.state.progress.as_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "learner": self.learner.state_dict(),
            "distiller": self.distiller.state_dict() if self.distiller is not None else {},
            "train_step": self.step.state_dict(),
        }

    def _check_checkpoint_config(self, stored: Any) -> None:
        """The checkpoint's config must resolve to this trainer's (:func:`~.run_reader.check_checkpoint_config`)."""
        check_checkpoint_config(stored, self.config, f"checkpoint in {self.run_dir}")

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self._check_checkpoint_config(ckpt.get("config"))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.learner.load_state_dict(ckpt["learner"])
        if self.distiller is not None:
            self.distiller.load_state_dict(ckpt["distiller"])
        self.step.load_state_dict(ckpt.get("train_step", {}))  # absent in checkpoints from before run.precision
        self.state = TrainState(
            epoch=int(ckpt["epoch"]),
            batch=int(ckpt["batch"]),
            global_step=int(ckpt["global_step"]),
            history=list(ckpt["history"]),
            progress=EpochProgress(**ckpt["progress"]),
        )
        self._saved_at = self._position()

    def _position(self) -> str:
        e, b = self.state.epoch, self.state.batch
        return f"after epoch {e}" if b == 0 else f"in epoch {e + 1} after batch {b}"

    def save(self, name: str = CHECKPOINT_FILE) -> None:
        """Write the state to ``name``, after checking that the last optimiser step left every weight finite
        (:meth:`BatchStep.check_weights`: a diverged state is never written over the last good one)."""
        self.batch_step.check_weights()
        if self.dist.is_main:  # every rank holds the same state; one writes it
            save_checkpoint(self.run_dir / name, self.state_dict())
        if name == CHECKPOINT_FILE:
            self._saved_at = self._position()

    # -- run files --------------------------------------------------------------------------------------------------
    def _write_text(self, name: str, text: str) -> None:
        """Write a run file atomically; a full disk is a one-line :class:`FileWriteError` naming it."""
        try:
            atomic_write_text(self.run_dir / name, text)
        except OSError as exc:
            kept = f"the previous {name} is intact" if (self.run_dir / name).is_file() else ""
            raise write_error(self.run_dir / name, exc, kept) from None

    def _write_run_files(self) -> None:
        if not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_text(CONFIG_FILE, self.config.to_toml())
        # metrics.jsonl is rewritten from the checkpoint's history, so a resumed run's file matches an unbroken one
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.state.history)
        self._write_text(METRICS_FILE, lines)

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        try:
            with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:  # the checkpoint holds the record: --resume rewrites metrics.jsonl from it
            raise write_error(
                self.run_dir / METRICS_FILE, exc, f"{CHECKPOINT_FILE} holds this epoch; --resume rewrites the file"
            ) from None

    # -- loop -------------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run summary (also written to ``summary.json``)."""
        if self.restored_from != CHECKPOINT_FILE:
            raise CheckpointError(
                f"this trainer was restored from {self.restored_from}, an earlier state kept for evaluation and "
                f"export; continue training from {CHECKPOINT_FILE} (sparsesnn train --resume {self.run_dir})"
            )
        lock = RunDirLock(self.run_dir)
        if self.dist.is_main:
            lock.acquire()  # one writer per run directory, for the whole run
        try:
            return self._fit_locked()
        finally:
            lock.release()

    def _fit_locked(self) -> dict[str, Any]:
        self._write_run_files()
        tb = open_tensorboard(self.config.run.tensorboard, self.run_dir) if self.dist.is_main else None
        previous = self._install_stop_signals()
        try:
            while self.state.epoch < self.config.run.epochs:
                self._train_epoch()
                changed = self.learner.on_epoch_end(self.state.epoch)
                if changed:
                    self._check_topology()
                record = self._epoch_record()
                # the structure evaluated here is not the one the epoch's last optimiser step trained
                record["changed_after_step"] = changed or 0 < self.learner.steps == self.learner.last_change_step
                self.state.history.append(record)
                self.state.epoch += 1
                self.state.batch = 0
                self.state.progress = EpochProgress()
                if selected_record(self.state.history, self.config.data.select_among) is record:
                    self.save(SELECTED_FILE)  # written first: a kill between the two re-runs the epoch, rewrites both
                self.save()
                self._append_metrics(record)
                if tb is not None:
                    tb.log(record)
                self._log_epoch(record)
                if record["changed_after_step"] and self.state.epoch == self.config.run.epochs:
                    self._warn_untrained_end()
        finally:
            self._restore_stop_signals(previous)
            if tb is not None:
                tb.close()
        summary = self.summary()
        if self.dist.is_main:
            self._write_text(SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        barrier()
        return summary

    def _batches(
        self, dataset: Dataset[Any], order: torch.Tensor, batch_size: int, start_batch: int, batch_seed: BatchSeed
    ) -> Iterator[Batch]:
        """:func:`iterate_batches` with this run's loader settings: ``data.num_workers``, pinned memory when the
        device is CUDA (``data.pin_memory``), and read-ahead of in-memory batches off the CPU. The batches are the
        same whatever the settings."""
        d = self.config.data
        return loader_batches(
            dataset,
            order,
            batch_size,
            start_batch,
            batch_seed,
            device=self.device,
            num_workers=d.num_workers,
            pin_memory=d.pin_memory,
        )

    def _warn_untrained_end(self) -> None:
        """The run ended right after a topology change (an option of the method asked for it): say so, as a Python
        warning and as a line of the train log."""
        message = (
            f"the run ends right after a change of its structure ({self.config.sparse.method}): its final test "
            f"accuracy, {CHECKPOINT_FILE} and an exported model are of a structure no optimiser step has trained "
            "(a setting of the method asked for it; by default no learner changes the topology after the last step)"
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        if self.dist.is_main:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def _train_epoch(self) -> None:
        cfg = self.config
        epoch = self.state.epoch
        self.model.train()
        order = epoch_order(len(self.data.train), cfg.run.seed, epoch, shuffle=True)  # type: ignore[arg-type]
        order = order[: self.steps_per_epoch * cfg.data.batch_size]
        prog = self.state.progress
        t0 = time.perf_counter()
        batches = self._batches(
            self.data.train,
            order,
            cfg.data.batch_size,
            self.state.batch,
            BatchSeed((cfg.run.seed, epoch), (TRAIN_BATCH_STREAM,)),
        )
        bar = tqdm(
            batches,
            total=self.steps_per_epoch,
            initial=self.state.batch,
            desc=f"epoch {epoch + 1}/{cfg.run.epochs}",
            disable=True if self.quiet else None,  # None: off when stderr is not a terminal
            leave=False,
            dynamic_ncols=True,
        )
        if self.distiller is not None:
            self.distiller.start_epoch(inputs_are_deterministic=not cfg.data.augment and cfg.data.encoder == "direct")
        for b, idx, x, y in bar:
            done = self.batch_step(
                epoch, b, idx, x, y, global_step=self.state.global_step, stop_requested=self._interrupt.is_set()
            )
            stop = done.stop
            if self.step.first_step_s is not None and not self._compile_logged:
                self._compile_logged = True
                if not self.quiet and self.dist.is_main:
                    print(
                        f"torch.compile: first step {self.step.first_step_s:.1f} s, compiling included", file=sys.stderr
                    )
            self.scheduler.step()
            if self.learner.step():
                self._check_topology()
            prog.loss_sum += done.loss_sum
            prog.correct += done.correct
            prog.seen += done.seen
            prog.steps += 1
            self.state.batch = b + 1
            self.state.global_step += 1
            bar.set_postfix(loss=f"{prog.loss_sum / prog.seen:.4f}", acc=f"{prog.correct / prog.seen:.4f}")
            every = cfg.run.checkpoint_every_steps
            if every and self.state.global_step % every == 0 and self.state.batch < self.steps_per_epoch:
                self.save()
            if not self.dist.enabled:  # one process: react to Ctrl-C after this very step
                stop = self._interrupt.is_set()
            if stop:
                self.save()
                barrier()
                name = signal.Signals(self._stop_signal).name
                raise RunInterrupted(
                    f"stopped by {name} at epoch {epoch + 1}, batch {b + 1}; checkpoint written to "
                    f"{self.run_dir / CHECKPOINT_FILE}. Continue with: sparsesnn train --resume {self.run_dir}",
                    self._stop_signal,
                )
        bar.close()
        self._epoch_time = time.perf_counter() - t0

    def _check_topology(self) -> None:
        """With several processes, prove after each topology change that every rank holds the same masks."""
        if self.dist.enabled:
            check_identical(self.learner.topology_digest(), "the sparse topology")
            self.topology_checks += 1

    def _epoch_record(self) -> dict[str, Any]:
        prog = self.state.progress
        evaluation = self.evaluate() if self.dist.is_main else {}
        if self.data.validation is not None and self.dist.is_main:
            evaluation.update(self.evaluate(self.data.validation, split="val", monitors=False))
        barrier()
        elapsed = getattr(self, "_epoch_time", 0.0)
        record: dict[str, Any] = {
            "epoch": self.state.epoch + 1,
            "step": self.state.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": prog.loss_sum / max(prog.seen, 1),
            "train_acc": prog.correct / max(prog.seen, 1),
            **evaluation,
            **self.learner.metrics(),
            "time_s": elapsed,
            "samples_per_s": prog.seen / elapsed if elapsed > 0 else 0.0,
        }
        if self.step.first_step_s is not None and not self._compile_reported:  # the epoch that compiled the model
            record["compile_s"] = self.step.first_step_s
            self._compile_reported = True
        return record

    def evaluate(
        self, dataset: Dataset[Any] | None = None, *, split: str = "test", monitors: bool = True
    ) -> dict[str, Any]:
        """Loss and accuracy on ``dataset`` (default: the test split) as ``{split}_loss`` / ``{split}_acc``; with
        ``monitors`` also the firing rates and per-sample synaptic operations of that pass.

        ``sops`` are effective accumulates (spikes x live fan-out), ``macs`` the analog first layer's
        multiply-accumulates, ``dense_ops`` every synapse at every step; ``energy_uJ`` = 0.9 pJ x sops + 4.6 pJ x macs.
        ``monitors=False`` (the validation pass) skips the hooks that count them.
        """
        return evaluate_model(
            self.model,
            dataset if dataset is not None else self.data.test,
            config=self.config,
            info=self.info,
            encoder=self.encoder,
            loss_fn=self.loss_fn,
            device=self.device,
            split=split,
            monitors=monitors,
        )

    def summary(self) -> dict[str, Any]:
        hist = self.state.history
        last = hist[-1] if hist else {}
        best = max(hist, key=lambda r: r.get("test_acc", 0.0)) if hist else {}
        selected = selected_record(hist, self.config.data.select_among)
        chosen = (
            {
                "selected_epoch": selected["epoch"],
                "selected_val_acc": selected["val_acc"],
                "selected_test_acc": selected["test_acc"],
            }
            if selected is not None
            else {}
        )
        changed = last.get("changed_after_step")  # absent from records written before the key existed
        return {
            "run_dir": str(self.run_dir),
            "epochs": self.state.epoch,
            "steps": self.state.global_step,
            "final_test_acc": last.get("test_acc"),
            "final_structure_trained": None if changed is None else not changed,
            "parameters": self.learner.parameter_count(),
            "best_test_acc": best.get("test_acc"),
            "best_epoch": best.get("epoch"),
            "density": self.learner.density(),
            "train_time_s": sum(r.get("time_s", 0.0) for r in hist),
            "processes": self.dist.world_size,
            "topology_checks": self.topology_checks,
            "layers": self.learner.layer_table(),
            **chosen,
        }

    def _log_epoch(self, r: dict[str, Any]) -> None:
        if self.quiet or not self.dist.is_main:
            return
        val = f"  val {r['val_acc']:.4f}" if "val_acc" in r else ""
        print(
            f"epoch {r['epoch']:>3}/{self.config.run.epochs}  loss {r['train_loss']:.4f}  train {r['train_acc']:.4f}"
            f"{val}  test {r['test_acc']:.4f}  density {self.learner.density():.4f}  rate {r['firing_rate']:.3f}"
            f"  {r['samples_per_s']:.0f} samples/s",
            file=sys.stderr,
            flush=True,
        )

    # -- Ctrl-C, preemption ------------------------------------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to checkpoint and stop after the current step (what Ctrl-C, SIGTERM and SIGUSR1 do)."""
        self._stop_signal = signum
        self._interrupt.set()

    def resume_position(self) -> str:
        """Where training continues from, in words: the next epoch and the batches of it already done."""
        epochs = self.config.run.epochs
        e, b = self.state.epoch, self.state.batch
        if e >= epochs:
            return f"all {epochs} epochs are done (step {self.state.global_step}); nothing left to train"
        where = f"epoch {e + 1} of {epochs}, "
        where += f"after batch {b} of {self.steps_per_epoch}" if b else f"from batch 1 of {self.steps_per_epoch}"
        return where + f" (optimiser step {self.state.global_step})"

    def _install_stop_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, _frame: Any) -> None:
            if self._interrupt.is_set():  # a second signal: stop now
                raise KeyboardInterrupt
            self.request_stop(signum)

        return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}

    @staticmethod
    def _restore_stop_signals(previous: dict[int, Any] | None) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)


def selection_candidates(history: list[dict[str, Any]], among: SelectAmong = "final_density") -> list[dict[str, Any]]:
    """The epoch records model selection may choose from: with ``"final_density"`` the trailing records whose
    ``density`` equals the last record's (the epochs since the connection count last changed), with
    ``"all_epochs"`` every record. Records without ``val_acc`` (no validation split) are never candidates.

    ``"final_density"`` keeps a method that prunes while it learns (SD-SNN, GMP, LTH) from being scored at an earlier,
    denser epoch than the structure it ends with; for a method at a fixed density (dense, static, SET, RigL, ESL)
    every epoch qualifies. It is computable as the run goes: when the density changes, the current epoch is the only
    candidate, so ``selected.pt`` is always the best candidate so far (the trainer writes it whenever the current epoch
    is the one selected). Densities are compared exactly: they are ratios of the same integer counts."""
    records = [r for r in history if "val_acc" in r]
    if among == "all_epochs" or not records:
        return records
    final = records[-1].get("density")
    start = len(records)
    while start > 0 and records[start - 1].get("density") == final:
        start -= 1
    return records[start:]


def selected_record(history: list[dict[str, Any]], among: SelectAmong = "final_density") -> dict[str, Any] | None:
    """The candidate epoch record (:func:`selection_candidates`) of best validation accuracy (the latest on a tie:
    the structure has developed furthest), or None when the run holds out no validation split. Model selection never
    looks at the test accuracy."""
    candidates = selection_candidates(history, among)
    if not candidates:
        return None
    return max(reversed(candidates), key=lambda r: r["val_acc"])


def new_run_dir(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    exports: tuple[str, ...] = (),
    log: Callable[[str], None] | None = None,
) -> Path:
    """The run directory for a fresh run. It refuses a directory another process is training into, and one that
    holds any file a run writes (:data:`~.rundir.RUN_FILES`: a previous run's results, or the user's own
    ``config.toml``): train would replace them. With ``overwrite`` those files, and model exports named ``model*``
    ending in one of ``exports``, are moved into ``RUN_DIR/previous-<time>/`` instead (by the main process only;
    ``log`` hears where), so nothing is lost."""
    rd = Path(run_dir) if run_dir is not None else Path(config.run.out_dir) / config.run.name
    RunDirLock(rd).check_free()  # a run in progress is named as such
    if overwrite:
        if env_context().is_main:  # one process moves; every rank checks before any of them writes
            moved = set_aside(rd, exports)
            if moved is not None and log is not None:
                log(f"sparsesnn: the files of the previous run in {rd} were moved to {moved}")
        return rd
    present = run_files_in(rd)
    if CHECKPOINT_FILE in present:
        raise CheckpointError(
            f"run directory {rd} already holds a run; continue it with --resume {rd}, pick another name with "
            f"--set run.name=... (or another --run-dir), or start a new run there with --overwrite (its files are "
            f"moved to {rd / PREVIOUS_PREFIX}<time>/ first)"
        )
    if present:
        raise CheckpointError(
            f"{rd} holds {', '.join(present)} (a previous run's results, or your own files), which a new run would "
            f"replace; train into another --run-dir, or pass --overwrite to start a new run there (the files are "
            f"moved to {rd / PREVIOUS_PREFIX}<time>/ first)"
        )
    return rd
