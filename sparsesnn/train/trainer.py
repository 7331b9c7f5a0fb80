"""Training and evaluation with exact resume.

A run directory holds ``config.toml`` (the resolved config), ``metrics.jsonl`` (one JSON line per epoch),
``summary.json`` and ``checkpoint.pt`` (written atomically at the end of every epoch, on Ctrl-C, and optionally
every N steps).

Determinism and exact resume: every source of randomness is derived from ``(seed, epoch, batch)``: the shuffling
order of an epoch comes from a generator seeded with ``(seed, epoch)``, and before each training step the global
torch RNG (dropout) and a per-batch generator (augmentation, Poisson encoding) are seeded from ``(seed, epoch,
batch)``. A checkpoint therefore needs no RNG state: resuming at (epoch, batch) replays exactly the same stream,
and the resumed run writes the same ``metrics.jsonl`` as an uninterrupted one (timing fields aside).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from sparsesnn.core.collectives import all_reduce_sum, barrier, check_identical
from sparsesnn.core.errors import CheckpointError, ConfigError, TrainingDivergedError
from sparsesnn.core.files import atomic_write_text
from sparsesnn.metrics import FiringRateMonitor, SynapticOpsMonitor, correct_count, correct_tensor
from sparsesnn.neuron.layers import make_encoder
from sparsesnn.sparse import StructureLearner

# the batching helpers live in sparsesnn.batching; imported here too so that `from sparsesnn.engine import ...` works
from sparsesnn.train.batching import (
    Batch,
    BatchSeed,
    default_prefetch,
    derive_seed,
    epoch_order,
    iterate_batches,
    resolve_pin_memory,
    to_time_major,
)
from sparsesnn.train.batching import SeededBatches as SeededBatches
from sparsesnn.train.checkpoint import load_checkpoint, save_checkpoint
from sparsesnn.train.config import Config, SelectAmong, config_differences, load_config, validate_config
from sparsesnn.train.distributed import init_from_env
from sparsesnn.train.factory import (
    build_data,
    build_distiller,
    build_learner,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
    device_available,
    resolve_device,
)
from sparsesnn.train.losses import LossFn, build_loss
from sparsesnn.train.rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SELECTED_FILE, SUMMARY_FILE, RunDirLock
from sparsesnn.train.step import TrainStep
from sparsesnn.train.tensorboard import open_tensorboard

CHECKPOINTS = {"last": CHECKPOINT_FILE, "selected": SELECTED_FILE}
#: config keys a resumed run may change (``Trainer.resume(device=...)``): where it runs, not what it computes
RELOCATABLE_KEYS = frozenset({"run.device"})
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
        self.config = config
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        cfg = config
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.dist, self.device = init_from_env(resolve_device(cfg.run.device))
        if self.device.type == "cuda":  # cuDNN times its algorithms and keeps the fastest unless runs must be exact
            torch.backends.cudnn.benchmark = not cfg.run.deterministic
        torch.manual_seed(derive_seed(cfg.run.seed, 0xD0D0))  # model initialisation
        self.data = build_data(cfg)
        self.info = self.data.info
        self.model = build_model_from_config(cfg, self.info).to(self.device)
        if cfg.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.encoder = make_encoder(cfg.data.encoder, cfg.data.time_steps)
        self.optimizer = build_optimizer(cfg, self.model)
        n_train = len(self.data.train)  # type: ignore[arg-type]
        self.steps_per_epoch = math.ceil(n_train / cfg.data.batch_size)
        if cfg.run.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.run.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.run.epochs
        self.learner: StructureLearner = build_learner(
            cfg.sparse,
            self.model,
            self.optimizer,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            total_epochs=cfg.run.epochs,
            seed=derive_seed(cfg.run.seed, 0x5EED),
        )
        cycle = self.learner.cycle_epochs or None  # LTH restarts the LR schedule every round
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch, cycle)
        self.loss_fn: LossFn = build_loss(
            cfg.loss.name, cfg.loss.label_smoothing, tet_lambda=cfg.loss.tet_lambda, tet_target=cfg.loss.tet_target
        )
        self.distiller = build_distiller(cfg, self.info, self.device)
        # the model the training step runs: DDP's wrapper averages gradients over ranks (the masks' gradient hooks
        # run before its all-reduce, so absent synapses stay at zero gradient everywhere)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        try:
            self.step = TrainStep(
                self.train_model,
                self.optimizer,
                device=self.device,
                precision=cfg.run.precision,
                compile=cfg.run.compile,
                compile_mode=cfg.run.compile_mode,
                grad_clip=cfg.optim.grad_clip,
                clip_parameters=self.model.parameters(),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.topology_checks = 0
        self.state = TrainState()
        self._interrupt = threading.Event()
        self._stop_signal: int = signal.SIGINT  # the signal that set _interrupt (request_stop: as Ctrl-C)
        self._saved_at = "none written yet"
        self.restored_from = CHECKPOINT_FILE
        self._compile_reported = False  # compile_s written to an epoch record
        self._compile_logged = False

    # -- construction from a run directory --------------------------------------------------------------------------
    @classmethod
    def resume(
        cls, run_dir: str | Path, *, quiet: bool = False, checkpoint: str = "last", device: str | None = None
    ) -> Trainer:
        """Rebuild the trainer from ``run_dir/config.toml`` and restore a checkpoint of the run.

        ``checkpoint="last"`` (``checkpoint.pt``) continues training exactly; ``"selected"`` (``selected.pt``, the
        epoch of best validation accuracy) is for evaluation and export only: :meth:`fit` refuses it.

        ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``) replaces the run's ``run.device``: a run written
        on CUDA continues, evaluates or exports on the CPU and the other way round. The checkpoint is read to the CPU
        and every state is restored where it lives (:mod:`sparsesnn.checkpoint`); a resumed run that goes on training
        records the new device in its ``config.toml``.
        """
        rd = Path(run_dir)
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {checkpoint!r}")
        if not (rd / CONFIG_FILE).is_file():
            raise CheckpointError(f"{rd} is not a run directory: {CONFIG_FILE} is missing")
        overrides = [f'run.device="{device}"'] if device is not None else []
        config = load_config(rd / CONFIG_FILE, overrides)
        path = rd / CHECKPOINTS[checkpoint]
        if checkpoint == "selected" and not path.is_file():
            raise CheckpointError(
                f"{rd} has no {SELECTED_FILE}: a run selects a checkpoint only when it holds out a validation split "
                "(data.validation_samples > 0) and has finished an epoch"
            )
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
        """The checkpoint's config must resolve to this trainer's. It is read through today's schema, so a key added
        since the checkpoint was written counts at its default (its absence is not a difference)."""
        where = f"checkpoint in {self.run_dir}"
        if not isinstance(stored, dict):
            raise CheckpointError(f"{where} holds no config to check against {CONFIG_FILE}")
        try:
            then = validate_config(stored)
        except ConfigError as exc:
            raise CheckpointError(f"{where} holds a config this version cannot read: {exc}") from None
        diffs = config_differences(then, self.config, ignore=RELOCATABLE_KEYS)
        if diffs:
            raise CheckpointError(
                f"{where} was written with a different config than {CONFIG_FILE} ({'; '.join(diffs)})"
            )

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
        if self.dist.is_main:  # every rank holds the same state; one writes it
            save_checkpoint(self.run_dir / name, self.state_dict())
        if name == CHECKPOINT_FILE:
            self._saved_at = self._position()

    # -- run files --------------------------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        if not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / CONFIG_FILE, self.config.to_toml())
        # metrics.jsonl is rewritten from the checkpoint's history, so a resumed run's file matches an unbroken one
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.state.history)
        atomic_write_text(self.run_dir / METRICS_FILE, lines)

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

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
            atomic_write_text(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        barrier()
        return summary

    def _batches(
        self, dataset: Dataset[Any], order: torch.Tensor, batch_size: int, start_batch: int, batch_seed: BatchSeed
    ) -> Iterator[Batch]:
        """:func:`iterate_batches` with this run's loader settings: ``data.num_workers``, pinned memory when the
        device is CUDA (``data.pin_memory``), and read-ahead of in-memory batches off the CPU. The batches are the
        same whatever the settings."""
        d = self.config.data
        return iterate_batches(
            dataset,
            order,
            batch_size,
            start_batch,
            d.num_workers,
            batch_seed,
            pin_memory=resolve_pin_memory(d.pin_memory, self.device),
            prefetch=default_prefetch(self.device),
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
            self.data.train, order, cfg.data.batch_size, self.state.batch, BatchSeed((cfg.run.seed, epoch), (1,))
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
            torch.manual_seed(derive_seed(cfg.run.seed, epoch, b, 2))
            if self.dist.enabled:  # this rank's share of the global batch
                idx, x, y = (t.tensor_split(self.dist.world_size)[self.dist.rank] for t in (idx, x, y))
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self.step.autocast():
                model_in = to_time_major(x, self.info, self.encoder)
                out = self.step.forward(model_in)
                if self.distiller is not None:
                    loss = self.distiller.loss(out, y, x, model_in, idx)
                else:
                    loss = self.loss_fn(out, y)
            n = int(y.shape[0])
            self.step.backward(loss)
            # the step's one host synchronisation, while the device runs the backward pass: loss and accuracy, read
            # before the optimiser changes anything
            loss_value, correct_value = torch.stack([loss.detach().float(), correct_tensor(out.detach(), y)]).tolist()
            # one small all-reduce per step (several processes only): global loss, accuracy, NaN and Ctrl-C flags
            loss_sum, correct, seen, bad, stop = all_reduce_sum(
                [
                    loss_value * n,
                    correct_value,
                    float(n),
                    float(not math.isfinite(loss_value)),
                    float(self._interrupt.is_set()),
                ]
            )
            if bad:
                raise TrainingDivergedError(
                    f"loss became {loss_value if not math.isfinite(loss_value) else 'nan on another rank'} at "
                    f"epoch {epoch + 1}, batch {b + 1} (step {self.state.global_step + 1}); stopped. The last good "
                    f"checkpoint is kept at {self.run_dir / CHECKPOINT_FILE} ({self._saved_at}). Try a lower "
                    "optim.lr or optim.grad_clip."
                )
            self.step.apply()
            if self.step.first_step_s is not None and not self._compile_logged:
                self._compile_logged = True
                if not self.quiet and self.dist.is_main:
                    print(
                        f"torch.compile: first step {self.step.first_step_s:.1f} s, compiling included", file=sys.stderr
                    )
            self.scheduler.step()
            if self.learner.step():
                self._check_topology()
            prog.loss_sum += loss_sum
            prog.correct += int(correct)
            prog.seen += int(seen)
            prog.steps += 1
            self.state.batch = b + 1
            self.state.global_step += 1
            bar.set_postfix(loss=f"{prog.loss_sum / prog.seen:.4f}", acc=f"{prog.correct / prog.seen:.4f}")
            every = cfg.run.checkpoint_every_steps
            if every and self.state.global_step % every == 0 and self.state.batch < self.steps_per_epoch:
                self.save()
            if not self.dist.enabled:  # one process: react to Ctrl-C after this very step
                stop = float(self._interrupt.is_set())
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

    @torch.no_grad()
    def evaluate(
        self, dataset: Dataset[Any] | None = None, *, split: str = "test", monitors: bool = True
    ) -> dict[str, Any]:
        """Loss and accuracy on ``dataset`` (default: the test split) as ``{split}_loss`` / ``{split}_acc``; with
        ``monitors`` also the firing rates and per-sample synaptic operations of that pass.

        ``sops`` are effective accumulates (spikes x live fan-out), ``macs`` the analog first layer's
        multiply-accumulates, ``dense_ops`` every synapse at every step; ``energy_uJ`` = 0.9 pJ x sops + 4.6 pJ x macs.
        ``monitors=False`` (the engine's validation pass) skips the hooks that count them.
        """
        cfg = self.config
        ds = dataset if dataset is not None else self.data.test
        self.model.eval()
        monitor = FiringRateMonitor(self.model) if monitors else None
        ops = SynapticOpsMonitor(self.model) if monitors else None
        loss_sum, correct, seen = 0.0, 0, 0
        order = epoch_order(len(ds), cfg.run.seed, 0, shuffle=False)  # type: ignore[arg-type]
        batches = self._batches(ds, order, cfg.data.eval_batch_size, 0, BatchSeed((cfg.run.seed,), (3,)))
        with ExitStack() as hooks:
            if monitor is not None and ops is not None:
                hooks.enter_context(monitor.active())
                hooks.enter_context(ops.active())
            for b, _idx, x, y in batches:
                torch.manual_seed(derive_seed(cfg.run.seed, b, 4))
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                with self.step.autocast():
                    out = self.model(to_time_major(x, self.info, self.encoder))
                    loss = self.loss_fn(out, y)
                n = int(y.shape[0])
                loss_sum += float(loss) * n
                correct += correct_count(out, y)
                seen += n
        result: dict[str, Any] = {f"{split}_loss": loss_sum / max(seen, 1), f"{split}_acc": correct / max(seen, 1)}
        if monitor is not None and ops is not None:
            counted = ops.result(max(seen, 1))
            result |= {
                "firing_rate": monitor.mean_rate(),
                "firing_rates": monitor.rates(),
                "sops": counted["Effective_ACs"],
                "macs": counted["Effective_MACs"],
                "dense_ops": counted["Dense"],
                "energy_uJ": counted["energy_uJ"],
            }
        return result

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
    candidate, so ``selected.pt`` is always the best candidate so far (the engine writes it whenever the current epoch
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


def inference_device(run_dir: str | Path, device: str | None = None) -> str | None:
    """The device to evaluate or export ``run_dir`` on: ``device`` if given; else the run's own when this machine has
    it (None: keep it); else the CPU, with a warning (a run trained on CUDA is evaluated on a machine without one)."""
    if device is not None or not (Path(run_dir) / CONFIG_FILE).is_file():
        return device  # Trainer.resume names what is missing
    recorded = load_config(Path(run_dir) / CONFIG_FILE).run.device
    if device_available(recorded):
        return None
    warnings.warn(
        f"{run_dir} ran on run.device = {recorded!r}, which this machine lacks: using the CPU (--device picks one)",
        stacklevel=2,
    )
    return "cpu"


def new_run_dir(config: Config, run_dir: str | Path | None = None) -> Path:
    """The run directory for a fresh run: refuses to overwrite one that already holds a checkpoint."""
    rd = Path(run_dir) if run_dir is not None else Path(config.run.out_dir) / config.run.name
    RunDirLock(rd).check_free()  # a run in progress is named as such
    if (rd / CHECKPOINT_FILE).exists():
        raise CheckpointError(
            f"run directory {rd} already holds a run; continue it with --resume {rd} or pick another "
            "name with --set run.name=..."
        )
    return rd
