"""Everything a config names, built for training: data, model, encoder, optimiser, LR schedule, structure learner,
loss, distiller, the model the step runs (DDP's wrapper with several processes) and the step itself.

:func:`build_components` builds them in a fixed order, so that a run's initial weights and masks depend on its config
alone: torch's global generator is seeded from ``(run.seed, MODEL_INIT_STREAM)`` before the data and the model are
built, the learner's generator from ``(run.seed, LEARNER_STREAM)``. A finished run is read with the same pieces
(:func:`build_data_and_model`, :func:`build_run_learner`; :mod:`.run_reader`). Nothing here changes process-wide
settings: :func:`apply_process_settings` does, and only the trainer and the run reader call it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from torch import nn

from sparsesnn.core.errors import ConfigError
from sparsesnn.data import DatasetInfo
from sparsesnn.neuron.layers import make_encoder
from sparsesnn.sparse import StructureLearner
from sparsesnn.train.batching import LEARNER_STREAM, MODEL_INIT_STREAM, derive_seed, to_time_major
from sparsesnn.train.config import Config, RunConfig
from sparsesnn.train.distill import Distiller
from sparsesnn.train.distributed import DistContext
from sparsesnn.train.factory import (
    DataBundle,
    build_data,
    build_distiller,
    build_learner,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
)
from sparsesnn.train.losses import LossFn, build_loss
from sparsesnn.train.step import TrainStep, check_precision_supported


def apply_process_settings(run: RunConfig, device: torch.device) -> None:
    """The settings of ``[run]`` that hold for the whole process: ``run.threads`` intra-op threads, deterministic
    algorithms with ``run.deterministic``, and on CUDA cuDNN's benchmark mode (it times its algorithms and keeps the
    fastest) unless runs must be exact."""
    if run.threads:
        torch.set_num_threads(run.threads)
    if run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not run.deterministic


def build_data_and_model(cfg: Config, device: torch.device) -> tuple[DataBundle, nn.Module]:
    """The run's data and its freshly initialised model on ``device`` (channels-last with ``run.channels_last``).
    Torch's global generator is seeded from ``(run.seed, MODEL_INIT_STREAM)`` first, then the data is built, then
    the model: the order the initial weights depend on."""
    torch.manual_seed(derive_seed(cfg.run.seed, MODEL_INIT_STREAM))
    data = build_data(cfg)
    model = build_model_from_config(cfg, data.info).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return data, model


def steps_per_epoch(cfg: Config, n_train: int) -> int:
    """Optimiser steps of one epoch over ``n_train`` samples, at most ``run.max_steps_per_epoch``."""
    steps = math.ceil(n_train / cfg.data.batch_size)
    if cfg.run.max_steps_per_epoch:
        steps = min(steps, cfg.run.max_steps_per_epoch)
    return steps


def learner_example(cfg: Config, data: DataBundle, device: torch.device) -> torch.Tensor:
    """The first training sample as the model takes it (time-major ``[T, 1, ...]``, encoded, on ``device``): what
    the learner counts the layers' MACs on. No random stream moves (a Poisson encoder draws under ``fork_rng``)."""
    if len(data.train) == 0:  # type: ignore[arg-type]
        raise ConfigError("the training split is empty: no sample to count the layers' multiply-accumulates on")
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        x = torch.as_tensor(data.train[0][0])[None].to(device)
        encoder = make_encoder(cfg.data.encoder, cfg.data.time_steps)
        return to_time_major(x, data.info, encoder)


def build_run_learner(
    cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch_steps: int, data: DataBundle
) -> StructureLearner:
    """The ``[sparse]`` learner of ``model`` for a run of ``run.epochs`` epochs of ``epoch_steps`` steps, its
    generator seeded from ``(run.seed, LEARNER_STREAM)`` (``optimizer`` None: to read a run, not to train it), with
    the layers' MACs counted on the first training sample (:func:`learner_example`)."""
    return build_learner(
        cfg.sparse,
        model,
        optimizer,
        total_steps=epoch_steps * cfg.run.epochs,
        steps_per_epoch=epoch_steps,
        total_epochs=cfg.run.epochs,
        seed=derive_seed(cfg.run.seed, LEARNER_STREAM),
        example_input=learner_example(cfg, data, next(model.parameters()).device),
    )


def start_problem(cfg: Config, data_cache: dict[str, DataBundle] | None = None) -> str | None:
    """Why ``sparsesnn train`` would refuse ``cfg`` when it starts (None when it would not): the data does not load,
    the model does not build on it, or the structure learner refuses its settings for this run's budget (e.g. a
    schedule whose updates would never run). Builds the data (shared through ``data_cache`` by runs with the same
    ``[data]``), the model on the CPU and the learner without an optimiser; trains nothing."""
    try:
        key = json.dumps(cfg.to_dict().get("data"), sort_keys=True, default=str)
        cache = data_cache if data_cache is not None else {}
        if key not in cache:
            cache[key] = build_data(cfg)
        data = cache[key]
        model = build_model_from_config(cfg, data.info)
        build_run_learner(cfg, model, None, steps_per_epoch(cfg, len(data.train)), data)  # type: ignore[arg-type]
    except (ValueError, KeyError) as exc:  # ConfigError and DatasetError are ValueErrors
        return str(exc).strip("'\"")
    return None


def build_run_loss(cfg: Config) -> LossFn:
    """The ``[loss]`` section as a loss function of ``(output, target)``."""
    loss = cfg.loss
    return build_loss(loss.name, loss.label_smoothing, tet_lambda=loss.tet_lambda, tet_target=loss.tet_target)


def check_precision(cfg: Config, device: torch.device) -> None:
    """Refuse a ``run.precision`` that ``device`` cannot autocast to, as a config error."""
    try:
        check_precision_supported(cfg.run.precision, device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class Components:
    """The live objects of a run being trained (:func:`build_components`)."""

    data: DataBundle
    info: DatasetInfo
    model: nn.Module
    encoder: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    total_steps: int
    learner: StructureLearner
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: LossFn
    distiller: Distiller | None
    #: the model the training step runs: DDP's wrapper with several processes, else ``model``
    train_model: nn.Module
    step: TrainStep


def build_components(cfg: Config, device: torch.device, dist: DistContext) -> Components:
    """Build everything ``cfg`` names for training on ``device`` as this process of ``dist``."""
    data, model = build_data_and_model(cfg, device)
    encoder = make_encoder(cfg.data.encoder, cfg.data.time_steps)
    optimizer = build_optimizer(cfg, model)
    epoch_steps = steps_per_epoch(cfg, len(data.train))  # type: ignore[arg-type]
    learner = build_run_learner(cfg, model, optimizer, epoch_steps, data)
    cycle = learner.cycle_epochs or None  # LTH restarts the LR schedule every round
    scheduler = build_scheduler(cfg, optimizer, epoch_steps, cycle)
    loss_fn = build_run_loss(cfg)
    distiller = build_distiller(cfg, data.info, device)
    # DDP's wrapper averages gradients over ranks (the masks' gradient hooks run before its all-reduce, so absent
    # synapses stay at zero gradient everywhere)
    train_model: nn.Module = model
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    try:
        step = TrainStep(
            train_model,
            optimizer,
            device=device,
            precision=cfg.run.precision,
            compile=cfg.run.compile,
            compile_mode=cfg.run.compile_mode,
            grad_clip=cfg.optim.grad_clip,
            clip_parameters=model.parameters(),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Components(
        data=data,
        info=data.info,
        model=model,
        encoder=encoder,
        optimizer=optimizer,
        steps_per_epoch=epoch_steps,
        total_steps=epoch_steps * cfg.run.epochs,
        learner=learner,
        scheduler=scheduler,
        loss_fn=loss_fn,
        distiller=distiller,
        train_model=train_model,
        step=step,
    )
