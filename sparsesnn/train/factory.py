"""Turn a validated :class:`~sparsesnn.train.config.Config` into live objects: data, model, optimiser, LR schedule,
structure learner, distiller (the loss is :func:`~sparsesnn.train.losses.build_loss`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from sparsesnn.core.errors import ConfigError
from sparsesnn.core.settings import validate_settings
from sparsesnn.data import DATASETS, ArrayDataset, DatasetInfo, build_dataset
from sparsesnn.models import MODELS, NeuronSpec
from sparsesnn.neuron.layers import make_encoder
from sparsesnn.sparse import METHODS, DenseLearner, StructureLearner
from sparsesnn.sparse.settings import params_problems
from sparsesnn.train.batching import to_time_major
from sparsesnn.train.checkpoint import load_checkpoint
from sparsesnn.train.config import Config, NeuronConfig, SparseConfig, load_config
from sparsesnn.train.distill import Distiller, load_factory
from sparsesnn.train.rundir import CHECKPOINT_FILE, CONFIG_FILE


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be available or it is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"run.device = {name!r}: CUDA is not available on this machine; use 'cpu' or 'auto' "
            "(a run directory moves with --device cpu)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"run.device = {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"run.device = {name!r}: MPS is not available on this machine")
    return dev


def device_available(name: str) -> bool:
    """Whether :func:`resolve_device` accepts ``name`` on this machine."""
    try:
        resolve_device(name)
    except ConfigError:
        return False
    return True


def neuron_spec(cfg: NeuronConfig) -> NeuronSpec:
    """The ``[neuron]`` section as the spec a model builds its neurons from."""
    return cfg.spec(cfg.kind, cfg.params)


@dataclass
class DataBundle:
    train: Dataset[Any]
    test: Dataset[Any]
    info: DatasetInfo
    validation: Dataset[Any] | None = None  # held out of the training split (``data.validation_samples``)


# The validation split does not depend on run.seed: every run, seed and method validates on the same samples.
VALIDATION_SPLIT_SEED = 0x5A11D  # data.validation_seed = None


def build_data(cfg: Config) -> DataBundle:
    d = cfg.data
    fields = DATASETS[d.name].Settings.model_fields
    kw: dict[str, Any] = dict(d.params)
    if "normalize" in fields:
        kw.setdefault("normalize", d.normalize)
    train_kw = dict(kw)
    if "augment" in fields:
        train_kw.setdefault("augment", d.augment)

    def load(split: str, kwargs: dict[str, Any], cap: int) -> tuple[Dataset[Any], DatasetInfo]:
        """One split of the dataset, cut to its first ``cap`` samples when ``cap`` is set."""
        ds, split_info = build_dataset(d.name, d.root, split, **kwargs)
        if cap and cap < len(ds):  # type: ignore[arg-type]
            ds = _take(ds, range(cap))
        return ds, split_info

    train, info = load("train", train_kw, d.max_train_samples)
    test, _ = load("test", kw, d.max_test_samples)
    validation = None
    if d.validation_samples:
        n_train = len(train)  # type: ignore[arg-type]
        if d.validation_samples >= n_train:
            raise ConfigError(
                f"data.validation_samples = {d.validation_samples}: the training split of {d.name!r} has only "
                f"{n_train} samples; hold out fewer so that some are left to train on"
            )
        # the held-out samples are read without augmentation: a second, plain view of the same training split
        plain = load("train", kw, d.max_train_samples)[0] if train_kw.get("augment") else train
        seed = VALIDATION_SPLIT_SEED if d.validation_seed is None else d.validation_seed
        held_out, kept = validation_indices(n_train, d.validation_samples, seed)
        validation = _take(plain, held_out)
        train = _take(train, kept)
    return DataBundle(train, test, info, validation)


def validation_indices(
    n_train: int, n_validation: int, seed: int = VALIDATION_SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n_train)`` into ``n_validation`` held-out indices and the rest, both sorted.

    A permutation drawn from ``seed`` alone (``data.validation_seed``, default :data:`VALIDATION_SPLIT_SEED`), so the
    split is the same for every run of a dataset whatever its ``run.seed``.
    """
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[:n_validation].sort().values, perm[n_validation:].sort().values


def _take(ds: Dataset[Any], indices: range | torch.Tensor) -> Dataset[Any]:
    """The samples ``indices`` of ``ds``; an in-memory dataset stays one (fast batch indexing), others a Subset."""
    if not isinstance(ds, ArrayDataset):
        return Subset(ds, indices.tolist() if isinstance(indices, torch.Tensor) else indices)
    if isinstance(indices, range):
        if indices.start == 0 and indices.step == 1:  # a prefix: a view, no copy
            return ArrayDataset(ds.inputs[: indices.stop], ds.targets[: indices.stop], ds.transform)
        indices = torch.arange(indices.start, indices.stop, indices.step)
    return ArrayDataset(ds.inputs[indices], ds.targets[indices], ds.transform)


def model_settings(name: str, params: dict[str, Any], info: DatasetInfo, spiking_output: bool | None) -> Any:
    """The settings of model ``name``: ``params``, with the dataset's ``in_channels``, ``num_classes`` and
    ``input_size`` (where the model takes them and ``params`` does not set them) and the readout choice."""
    settings = MODELS[name].Settings
    kw: dict[str, Any] = dict(params)
    for key, value in (("in_channels", info.in_channels), ("num_classes", info.num_classes)):
        if key in settings.model_fields:
            kw.setdefault(key, value)
    if "input_size" in settings.model_fields and info.sample_shape[-1] > 1:
        kw.setdefault("input_size", info.input_size)
    if spiking_output is not None:
        kw["spiking_output"] = spiking_output
    try:
        return validate_settings(settings, f"model {name!r}", kw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_model_from_config(cfg: Config, info: DatasetInfo) -> nn.Module:
    m = cfg.model
    spiking_output = m.spiking_output
    if spiking_output is None and cfg.loss.name == "mse":
        spiking_output = True
    settings = model_settings(m.name, m.params, info, spiking_output)
    neuron = neuron_spec(cfg.neuron) if cfg.neuron is not None else None
    return MODELS[m.name].from_settings(settings, neuron)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0
        )
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float, cosine: bool) -> float:
    """Linear warm-up from ``1/warmup`` to 1, then cosine decay to ``min_ratio`` (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int, cycle_epochs: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR factor; with ``cycle_epochs`` the schedule restarts every cycle (LTH rounds)."""
    s = cfg.schedule
    total = (cycle_epochs or cfg.run.epochs) * steps_per_epoch
    warmup = round(s.warmup_epochs * steps_per_epoch)
    min_ratio = s.min_lr / cfg.optim.lr
    cosine = s.name == "cosine"
    period = total if cycle_epochs else None

    def factor(step: int) -> float:
        return lr_factor(step % period if period else step, total, warmup, min_ratio, cosine)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_distiller(cfg: Config, info: DatasetInfo, device: torch.device) -> Distiller | None:
    """The :class:`~sparsesnn.train.distill.Distiller` a ``[distill]`` section describes (None without one)."""
    d = cfg.distill
    if d is None:
        return None

    online_opt = None
    if d.source == "run":
        teacher, teacher_cfg = load_teacher_run(Path(d.teacher_run or ""), info)
        encoder = make_encoder(teacher_cfg.data.encoder, teacher_cfg.data.time_steps)
        teacher_input = lambda raw, _student_in: to_time_major(raw, info, encoder)  # noqa: E731
    elif d.source == "module":
        try:
            teacher = load_factory(d.teacher_factory or "")(**d.teacher_params)
            state = torch.load(d.teacher_weights or "", map_location="cpu", weights_only=True)
            teacher.load_state_dict(state)
        except (ValueError, OSError, RuntimeError, TypeError) as exc:
            raise ConfigError(f"distill: cannot build the teacher {d.teacher_factory!r}: {exc}") from None
        if d.teacher_input == "static":
            teacher_input = lambda raw, _student_in: raw  # noqa: E731
        else:
            teacher_input = lambda _raw, student_in: student_in  # noqa: E731
    else:
        name = d.teacher_model or ""
        settings = model_settings(name, d.teacher_params, info, None)
        teacher = MODELS[name].from_settings(settings, neuron_spec(cfg.neuron) if cfg.neuron is not None else None)
        teacher_input = lambda _raw, student_in: student_in  # noqa: E731
    teacher = teacher.to(device)
    if d.source == "online":
        online_opt = build_optimizer(cfg, teacher)
    try:
        return Distiller(
            teacher,
            teacher_input,
            divergence=d.divergence,
            temperature=d.temperature,
            weight=d.weight,
            online_optimizer=online_opt,
            cache=d.cache,
        )
    except ValueError as exc:
        raise ConfigError(f"[distill]: {exc}") from None


def load_teacher_run(run_dir: Path, info: DatasetInfo) -> tuple[nn.Module, Config]:
    """The trained model of a sparsesnn run directory, with its config (mask buffers are dropped: weights are
    already zero where synapses are absent)."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"distill.teacher_run = {str(run_dir)!r}: not a run directory (no config.toml)")
    teacher_cfg = load_config(run_dir / CONFIG_FILE)
    if teacher_cfg.data.name != info.name:
        raise ConfigError(
            f"distill.teacher_run: the teacher was trained on {teacher_cfg.data.name!r}, the student on {info.name!r}"
        )
    model = build_model_from_config(teacher_cfg, info)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)["model"]
    state = {k: v for k, v in state.items() if not k.endswith(("weight_mask", "neuron_mask"))}
    model.load_state_dict(state)
    return model, teacher_cfg


def build_learner(
    cfg: SparseConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    total_steps: int,
    steps_per_epoch: int,
    total_epochs: int,
    seed: int,
    example_input: torch.Tensor | None = None,
) -> StructureLearner:
    """Build the learner a ``[sparse]`` config section names; bad settings raise :class:`ConfigError`.
    ``example_input`` (one sample as the model takes it) gives the learner the layers' MACs (``budget = "macs"``
    needs it; with it, the MAC densities are reported too)."""
    factory = METHODS[cfg.method]
    if cfg.method == "dense":
        if cfg.density != 1.0:
            raise ConfigError(f"sparse.density = {cfg.density}: the 'dense' method keeps every synapse; use 1.0")
        if cfg.granularity not in (None, "weight"):
            raise ConfigError(f"sparse.granularity = {cfg.granularity!r}: the 'dense' method has no masks to group")
        return DenseLearner(model, optimizer)
    kwargs: dict[str, Any] = dict(
        density=cfg.density,
        include=cfg.include,
        exclude=cfg.exclude,
        seed=seed,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        total_epochs=total_epochs,
    )
    for key in ("distribution", "budget", "granularity", "block_size", "dense_first", "dense_last"):  # None: default
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    problems = params_problems(factory.Settings, cfg.params)
    if problems:
        raise ConfigError("; ".join(f"sparse.params.{p}" for p in problems))
    try:
        return factory(model, optimizer, example_input=example_input, **kwargs, **cfg.params)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"[sparse] method {cfg.method!r}: {exc}") from None
