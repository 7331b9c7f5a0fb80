"""Reading a run directory: its resolved config, a checkpoint of it, and the finished run as live objects.

The pieces (:func:`read_run_config`, :func:`checkpoint_path`, :func:`check_checkpoint_config`) are what the trainer
resumes a run with. :func:`read_run` puts them together for everything that reads a run without training it
(``sparsesnn eval``, export, deploy's evaluation): the model with its masks restored from ``checkpoint.pt`` or
``selected.pt``, its structure learner, the dataset and its description, and the inputs export checks a model on. It
builds no optimiser, LR schedule, distiller or training step.

Checkpoints are read to the CPU and every state is restored where it lives (:mod:`.checkpoint`), so a run written
on CUDA is read on the CPU and the other way round; a run whose device this machine lacks is read on the CPU, with a
warning (:func:`inference_device`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from sparsesnn.core.errors import CheckpointError, ConfigError
from sparsesnn.data import DatasetInfo
from sparsesnn.neuron.layers import make_encoder
from sparsesnn.sparse import StructureLearner
from sparsesnn.train.batching import (
    EVAL_BATCH_STREAM,
    EVAL_GLOBAL_STREAM,
    EXPORT_BATCH_STREAM,
    EXPORT_GLOBAL_STREAM,
    BatchSeed,
    derive_seed,
    epoch_order,
    iterate_batches,
    to_time_major,
)
from sparsesnn.train.checkpoint import load_checkpoint
from sparsesnn.train.components import (
    apply_process_settings,
    build_data_and_model,
    build_run_learner,
    build_run_loss,
    check_precision,
    steps_per_epoch,
)
from sparsesnn.train.config import Config, config_differences, load_config, validate_config
from sparsesnn.train.evaluation import evaluate_model
from sparsesnn.train.factory import DataBundle, device_available, resolve_device
from sparsesnn.train.losses import LossFn
from sparsesnn.train.rundir import CHECKPOINT_FILE, CONFIG_FILE, SELECTED_FILE

#: the checkpoints of a run by the name ``--checkpoint`` gives them: the latest state, and the epoch of best
#: validation accuracy
CHECKPOINTS = {"last": CHECKPOINT_FILE, "selected": SELECTED_FILE}
#: config keys a resumed run may change (``--device``): where it runs, not what it computes
RELOCATABLE_KEYS = frozenset({"run.device"})


def inference_device(run_dir: str | Path, device: str | None = None) -> str | None:
    """The device to evaluate or export ``run_dir`` on: ``device`` if given; else the run's own when this machine has
    it (None: keep it); else the CPU, with a warning (a run trained on CUDA is evaluated on a machine without one)."""
    if device is not None or not (Path(run_dir) / CONFIG_FILE).is_file():
        return device  # read_run_config names what is missing
    recorded = load_config(Path(run_dir) / CONFIG_FILE).run.device
    if device_available(recorded):
        return None
    warnings.warn(
        f"{run_dir} ran on run.device = {recorded!r}, which this machine lacks: using the CPU (--device picks one)",
        stacklevel=2,
    )
    return "cpu"


def read_run_config(run_dir: str | Path, device: str | None = None) -> Config:
    """The resolved config of ``run_dir`` (its ``config.toml``), with ``run.device`` replaced by ``device`` if given
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``)."""
    rd = Path(run_dir)
    if not (rd / CONFIG_FILE).is_file():
        raise CheckpointError(f"{rd} is not a run directory: {CONFIG_FILE} is missing")
    overrides = [f'run.device="{device}"'] if device is not None else []
    return load_config(rd / CONFIG_FILE, overrides)


def checkpoint_path(run_dir: str | Path, checkpoint: str = "last") -> Path:
    """The file of ``checkpoint`` (a key of :data:`CHECKPOINTS`) in ``run_dir``. ``"selected"`` exists only for runs
    that hold out a validation split and have finished an epoch; its absence is a :class:`CheckpointError`."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {checkpoint!r}")
    rd = Path(run_dir)
    path = rd / CHECKPOINTS[checkpoint]
    if checkpoint == "selected" and not path.is_file():
        raise CheckpointError(
            f"{rd} has no {SELECTED_FILE}: a run selects a checkpoint only when it holds out a validation split "
            "(data.validation_samples > 0) and has finished an epoch"
        )
    return path


def check_checkpoint_config(stored: Any, config: Config, where: str) -> None:
    """A checkpoint's config (``stored``) must resolve to ``config`` up to :data:`RELOCATABLE_KEYS`. It is read through
    today's schema, so a key added since the checkpoint was written counts at its default (its absence is not a
    difference). ``where`` names the checkpoint in the error."""
    if not isinstance(stored, dict):
        raise CheckpointError(f"{where} holds no config to check against {CONFIG_FILE}")
    try:
        then = validate_config(stored)
    except ConfigError as exc:
        raise CheckpointError(f"{where} holds a config this version cannot read: {exc}") from None
    diffs = config_differences(then, config, ignore=RELOCATABLE_KEYS)
    if diffs:
        raise CheckpointError(f"{where} was written with a different config than {CONFIG_FILE} ({'; '.join(diffs)})")


@dataclass
class FinishedRun:
    """A run directory read back (:func:`read_run`): the model in eval mode with the checkpoint's weights and masks,
    its learner, the data, and the evaluation and example inputs every reader of a run uses."""

    run_dir: Path
    config: Config
    device: torch.device
    data: DataBundle
    model: nn.Module
    learner: StructureLearner
    encoder: nn.Module
    loss_fn: LossFn
    #: the file the state was restored from (``checkpoint.pt`` or ``selected.pt``)
    restored_from: str
    #: epochs completed in that state
    epoch: int

    @property
    def info(self) -> DatasetInfo:
        return self.data.info

    def evaluate(
        self, dataset: Dataset[Any] | None = None, *, split: str = "test", monitors: bool = True
    ) -> dict[str, Any]:
        """The trainer's evaluation pass (:func:`~sparsesnn.train.evaluation.evaluate_model`) on ``dataset``, by
        default the test split."""
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

    @torch.no_grad()
    def example(self, samples: int) -> torch.Tensor:
        """The first ``samples`` test samples (fewer when the split is smaller) encoded time-major ``[T, B, ...]`` as
        the evaluation pass encodes its first batch, on the CPU: the input export checks a model on."""
        cfg = self.config
        test = self.data.test
        n = min(int(samples), len(test))  # type: ignore[arg-type]
        if n < 1:
            raise CheckpointError(
                f"{self.run_dir}: the test split is empty; no example input to check the compaction on"
            )
        order = epoch_order(n, cfg.run.seed, 0, shuffle=False)
        _, _, x, _ = next(iterate_batches(test, order, n, 0, 0, BatchSeed((cfg.run.seed,), (EVAL_BATCH_STREAM,))))
        torch.manual_seed(derive_seed(cfg.run.seed, 0, EVAL_GLOBAL_STREAM))  # the Poisson encoder's generator
        return to_time_major(x.to(self.device), self.info, self.encoder).detach().cpu().contiguous()

    def test_batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole test split in batches of ``size``: time-major inputs ``[T, B, ...]`` and their targets, encoded
        as the run encodes them, on the CPU (torch's global generator seeded from ``EXPORT_GLOBAL_STREAM`` once,
        each batch's augmentation from ``EXPORT_BATCH_STREAM``)."""
        seed = self.config.run.seed
        test = self.data.test
        everything = epoch_order(len(test), seed, 0, shuffle=False)  # type: ignore[arg-type]
        torch.manual_seed(derive_seed(seed, 0, EXPORT_GLOBAL_STREAM))
        for _, _, xb, yb in iterate_batches(test, everything, size, 0, 0, BatchSeed((seed,), (EXPORT_BATCH_STREAM,))):
            with torch.no_grad():
                yield to_time_major(xb.to(self.device), self.info, self.encoder).detach().cpu(), yb.cpu()


def read_run(run_dir: str | Path, *, checkpoint: str = "last", device: str | None = None) -> FinishedRun:
    """Read ``run_dir`` at ``checkpoint`` ("last": ``checkpoint.pt``; "selected": ``selected.pt``) on ``device``
    (default: the run's own, or the CPU with a warning where this machine lacks it: :func:`inference_device`).

    The config's process-wide settings apply as in training (:func:`~.components.apply_process_settings`), so an
    evaluation computes what the trainer's did. The learner is built without an optimiser: the run is for
    evaluation and export (e.g. ``learner.finalize()``), not for more training."""
    rd = Path(run_dir)
    config = read_run_config(rd, inference_device(rd, device))
    path = checkpoint_path(rd, checkpoint)
    state = load_checkpoint(path)
    check_checkpoint_config(state.get("config"), config, f"checkpoint in {rd}")
    dev = resolve_device(config.run.device)
    apply_process_settings(config.run, dev)
    check_precision(config, dev)
    data, model = build_data_and_model(config, dev)
    learner = build_run_learner(config, model, None, steps_per_epoch(config, len(data.train)), data)  # type: ignore[arg-type]
    model.load_state_dict(state["model"])
    learner.load_state_dict(state["learner"])
    model.eval()
    return FinishedRun(
        run_dir=rd,
        config=config,
        device=dev,
        data=data,
        model=model,
        learner=learner,
        encoder=make_encoder(config.data.encoder, config.data.time_steps),
        loss_fn=build_run_loss(config),
        restored_from=path.name,
        epoch=int(state["epoch"]),
    )
