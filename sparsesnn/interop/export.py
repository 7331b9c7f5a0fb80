"""Export a trained run as a deployable model: masks baked in, dead neurons removed, in one of three formats.

``sparsesnn export RUN_DIR --format pt|safetensors|nir|deploy [--out PATH]`` (or :func:`export_run`):

1. :func:`prepare_export` reads the run with :func:`~sparsesnn.train.run_reader.read_run` (no trainer is built),
   bakes the masks into the weights (:meth:`StructureLearner.finalize`, which also drops the mask buffers and
   hooks) and removes dead units with :func:`~sparsesnn.sparse.shrink.compact`, which checks every removal on an
   example batch: the first ``samples`` test samples, encoded time-major as in evaluation. The model is in eval mode
   on the CPU.
2. The model is written as

   * ``pt``: ``torch.save`` of ``{"meta": ..., "state_dict": ...}``;
   * ``safetensors``: the same state dict as safetensors tensors, the metadata as a JSON string under the
     ``"sparsesnn"`` key of the file's header metadata;
   * ``deploy`` (``model.deploy.pt``): the ``pt`` payload plus the choices :func:`sparsesnn.deploy.deploy` measured
     on this machine (which layers run event-driven, with their times) and the batch-1 example they were measured
     on; :func:`sparsesnn.deploy.load_deployed` rebuilds the model and applies those choices, or measures again
     on the machine it runs on;
   * ``nir``: a NIR graph (:mod:`sparsesnn.interop.nir_write`; BatchNorm folded into the convs), which is then read
     back with ``nir.read``, re-simulated by our loader on the example batch and compared with the model. ``dt``
     (``--dt``) is the duration of one time step in seconds, written into every neuron's ``tau = dt * tau_steps``
     and into the graph's metadata; its default 1e-4 is the step snnTorch's and SpikingJelly's NIR readers assume,
     so they compute the model's spikes (:mod:`sparsesnn.interop.nir_write` gives the equations and each peer's
     conventions).

Why a state dict plus a description and not a pickled module: a pickled ``nn.Module`` can only be loaded with
``torch.load(weights_only=False)``, which runs arbitrary code from the file, breaks when classes move, and has no
safetensors equivalent. Instead both formats store the run's resolved config, the dataset description the model
was built from and every tensor's shape; :func:`rebuild_model` builds the architecture from the config, resizes the
layers that compaction narrowed to the stored shapes, and loads the tensors with ``strict=True``. Loading needs only
``weights_only=True`` (``pt``) or no pickle at all (``safetensors``), and reproduces the exported model's outputs
bit for bit.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsesnn.core.errors import CheckpointError, SparseSNNError
from sparsesnn.core.files import atomic_write_bytes
from sparsesnn.data import DatasetInfo
from sparsesnn.interop.nir_read import load_nir, max_output_difference
from sparsesnn.interop.nir_write import DEFAULT_DT, check_dt, write_nir
from sparsesnn.sparse.shrink import CompactionReport, compact
from sparsesnn.train.checkpoint import FileWriteError, non_finite_tensors, write_error
from sparsesnn.train.config import Config, validate_config
from sparsesnn.train.factory import build_model_from_config
from sparsesnn.train.run_reader import read_run
from sparsesnn.train.rundir import RunDirBusyError, RunDirLock, describe_holder

#: the formats of :func:`export_run`; the ``deploy`` format is :func:`sparsesnn.deploy.export_run_deployed`
FORMATS: tuple[str, ...] = ("pt", "safetensors", "nir")


class ExportOptionError(SparseSNNError, ValueError):
    """An export option that does not apply or has a bad value (e.g. ``dt`` for a non-NIR format)."""


#: file extension of each format (NIR files are HDF5 and conventionally named ``*.nir``)
EXTENSIONS: dict[str, str] = {"pt": "pt", "safetensors": "safetensors", "nir": "nir", "deploy": "deploy.pt"}
#: the errors of a write that failed for want of room or permission (a full disk, a quota, a read-only file system)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO})
EXPORT_FORMAT = "sparsesnn.model"
EXPORT_VERSION = 1


@dataclass
class ExportBundle:
    """A finalized, compacted model with what is needed to describe and check it."""

    model: nn.Module
    config: Config
    info: DatasetInfo
    report: CompactionReport
    example: torch.Tensor  # time-major example input [T, B, ...] (test samples)
    #: ``test_batches(size)``: the whole test split as time-major inputs ``[T, B, ...]`` with their targets, encoded
    #: as the run encodes them (CPU)
    test_batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]] | None = None
    #: the finalized model before compaction (masks baked in, every unit kept): "the same network, dense"
    finalized: nn.Module | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one time step of one sample."""
        return tuple(int(s) for s in self.example.shape[2:])

    def meta(self) -> dict[str, Any]:
        """The JSON-able description stored with the ``pt`` and ``safetensors`` exports."""
        steps = int(self.example.shape[0])
        return export_meta(self.model, self.config, self.info, self.report, self.input_shape, steps)


@dataclass
class ExportResult:
    """What :func:`export_run` wrote."""

    path: Path
    format: str
    report: CompactionReport
    samples: int
    nir_max_diff: float | None = None  # NIR only: largest output difference of the re-simulated file
    dt: float | None = None  # NIR only: the time step (seconds) the file was written with
    deploy: dict[str, Any] | None = None  # deploy only: what sparsesnn.deploy measured and chose (DeployReport)


def prepare_export(
    run_dir: str | Path, *, samples: int = 32, checkpoint: str = "last", device: str | None = None
) -> ExportBundle:
    """Read ``run_dir`` at ``checkpoint`` ("last" or "selected") on ``device`` (default: the run's own, or the CPU
    where this machine lacks it) with :func:`~sparsesnn.train.run_reader.read_run`, finalize its learner, compact the
    model on ``samples`` test samples; model on CPU, eval."""
    run = read_run(run_dir, checkpoint=checkpoint, device=device)
    model = run.learner.finalize()
    model.eval()
    bad = non_finite_tensors({"model": model.state_dict()})
    if bad:
        raise CheckpointError(
            f"{run_dir}: the model holds non-finite values (NaN or infinity) in {', '.join(bad[:5])}; a diverged "
            "model is not exported"
        )
    example = run.example(samples)
    small, report = compact(model.cpu(), example)
    return ExportBundle(small.eval(), run.config, run.info, report, example, run.test_batches, model.eval())


def load_compact_model(run_dir: str | Path) -> tuple[nn.Module, DatasetInfo, CompactionReport]:
    """The finalized, compacted model of ``run_dir`` (eval mode, CPU), its dataset description and the report."""
    bundle = prepare_export(run_dir)
    return bundle.model, bundle.info, bundle.report


# ----------------------------------------------------------------------------------------------------------------------
# description and rebuild
# ----------------------------------------------------------------------------------------------------------------------
def export_meta(
    model: nn.Module,
    config: Config,
    info: DatasetInfo,
    report: CompactionReport,
    input_shape: tuple[int, ...],
    time_steps: int,
) -> dict[str, Any]:
    """Config, dataset description, tensor shapes and compaction report as plain JSON-able data."""
    meta = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "config": config.to_dict(),
        "info": dataclasses.asdict(info),
        "input_shape": list(input_shape),
        "time_steps": int(time_steps),
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "compaction": report.as_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return json.loads(json.dumps(meta))  # tuples -> lists: what both formats store and give back


def _info_from_meta(data: dict[str, Any]) -> DatasetInfo:
    names = {f.name for f in dataclasses.fields(DatasetInfo)}
    kw = {k: v for k, v in data.items() if k in names}
    kw["sample_shape"] = tuple(kw["sample_shape"])
    return DatasetInfo(**kw)


@torch.no_grad()
def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter/buffer of ``model`` the shape it has in ``state`` and update the layers' size fields."""
    for key, value in state.items():
        owner, _, attr = key.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue  # strict loading reports it
        current = getattr(module, attr, None)
        if not isinstance(current, torch.Tensor) or current.shape == value.shape:
            continue
        if isinstance(current, nn.Parameter):
            setattr(module, attr, nn.Parameter(torch.empty_like(value), requires_grad=current.requires_grad))
        else:
            module._buffers[attr] = torch.empty_like(value)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.modules.conv._ConvNd):
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            ref = m.weight if m.weight is not None else m.running_mean
            if ref is not None:
                m.num_features = int(ref.shape[0])


def rebuild_model(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """Build the architecture ``meta`` describes, narrow it to the tensors' shapes, load ``state`` (eval mode)."""
    if meta.get("format") != EXPORT_FORMAT or meta.get("version") != EXPORT_VERSION:
        raise CheckpointError(
            f"not a sparsesnn model export of version {EXPORT_VERSION} (format {meta.get('format')!r}, "
            f"version {meta.get('version')!r})"
        )
    config = validate_config(meta["config"])
    model = build_model_from_config(config, _info_from_meta(meta["info"]))
    _resize_to(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the exported tensors do not fit the model the config builds: {exc}") from None
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# formats
# ----------------------------------------------------------------------------------------------------------------------
def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def export_pt(
    model: nn.Module, path: str | Path, meta: dict[str, Any], extra: dict[str, torch.Tensor] | None = None
) -> Path:
    """Write ``{"meta": meta, "state_dict": ..., **extra}`` with ``torch.save`` (loadable with ``weights_only=True``;
    ``extra``: further named tensors, e.g. the ``deploy`` format's example input)."""
    buf = io.BytesIO()
    torch.save({"meta": meta, "state_dict": _tensors(model), **(extra or {})}, buf)
    _write(path, buf.getvalue())
    return Path(path)


def _write(path: str | Path, payload: bytes) -> None:
    """Write atomically; a full disk (or a read-only file system) is a one-line error naming the file."""
    try:
        atomic_write_bytes(path, payload)
    except OSError as exc:
        kept = f"the previous {Path(path).name} is intact" if Path(path).is_file() else ""
        raise write_error(path, exc, kept) from None


def read_pt(path: str | Path) -> dict[str, Any]:
    """The payload of a ``pt`` (or ``deploy``) export, read without unpickling code."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a damaged or foreign file
        raise CheckpointError(f"cannot read model export {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not a sparsesnn model export (pt)")
    return payload


def load_pt(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a ``pt`` export (no code is unpickled); returns ``(model, meta)``."""
    payload = read_pt(path)
    return rebuild_model(payload["meta"], payload["state_dict"]), payload["meta"]


def export_safetensors(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write the state dict as safetensors; ``meta`` goes, as JSON, into the header under ``"sparsesnn"``."""
    from safetensors.torch import save

    _write(path, save(_tensors(model), metadata={"format": EXPORT_FORMAT, "sparsesnn": json.dumps(meta)}))
    return Path(path)


def load_safetensors(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a ``safetensors`` export; returns ``(model, meta)``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118  (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"cannot read model export {path}: {type(exc).__name__}: {exc}") from None
    if "sparsesnn" not in header:
        raise CheckpointError(f"{path} is a safetensors file without sparsesnn metadata")
    meta = json.loads(header["sparsesnn"])
    return rebuild_model(meta, state), meta


def load_export(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a ``pt`` or ``safetensors`` export by its extension."""
    suffix = Path(path).suffix.lstrip(".")
    if suffix == "safetensors":
        return load_safetensors(path)
    return load_pt(path)


def export_nir(model: nn.Module, path: str | Path, example: torch.Tensor, *, dt: float | None = None) -> float:
    """Write ``model`` as NIR with time step ``dt`` seconds (default
    :data:`~sparsesnn.interop.nir_write.DEFAULT_DT`), read the file back with ``nir.read``, re-simulate it with our
    loader (which reads ``dt`` from the file) on ``example`` (time-major) and return the largest output difference
    to ``model``."""
    write_nir(model, path, tuple(example.shape[2:]), dt=DEFAULT_DT if dt is None else dt)
    simulator = load_nir(path, backend="eager")
    return max_output_difference(model, simulator, example)


def default_path(run_dir: str | Path, fmt: str, checkpoint: str = "last") -> Path:
    """``RUN_DIR/model.<ext>`` (``model_selected.<ext>`` for the selected checkpoint)."""
    stem = "model" if checkpoint == "last" else f"model_{checkpoint}"
    return Path(run_dir) / f"{stem}.{EXTENSIONS[fmt]}"


def is_export_name(name: str) -> bool:
    """Whether ``name`` is one an export may have inside a run directory: ``model*.<ext>`` of a format
    (:data:`EXTENSIONS`), e.g. ``model.pt``, ``model_selected.nir``, ``model-small.safetensors``."""
    return name.startswith("model") and any(name.endswith("." + ext) for ext in EXTENSIONS.values())


def export_target(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, checkpoint: str = "last", *, force: bool = False
) -> Path:
    """The file an export of ``run_dir`` as ``fmt`` writes (``out``, default :func:`default_path`), checked before
    any work; every format (``deploy`` included) goes through it. Refused, as :class:`ExportOptionError`: a
    directory, and a path inside the run directory other than an export name (:func:`is_export_name`), so that no
    export replaces the run's ``checkpoint.pt``, ``config.toml``, ``metrics.jsonl`` or anything else there. Refused as
    :class:`~sparsesnn.train.rundir.RunDirBusyError` unless ``force``: a run another process is training now (its
    ``run.lock`` is held), whose checkpoint changes under the export."""
    rd = Path(run_dir)
    path = Path(out) if out is not None else default_path(rd, fmt, checkpoint)
    if path.is_dir():
        raise ExportOptionError(
            f"--out {path} is a directory; give the file to write, e.g. {path / default_path(rd, fmt, checkpoint).name}"
        )
    try:
        inside = path.resolve().is_relative_to(rd.resolve())
    except OSError:
        inside = False
    if inside and not is_export_name(path.name):
        raise ExportOptionError(
            f"--out {path} is inside the run directory {rd}, where an export may only be named model*.<ext> "
            f"({', '.join(sorted({default_path(rd, f).name for f in EXTENSIONS}))}, model_selected.pt, ...): the "
            "run's own files (checkpoint, config, metrics, summary) are what resume, eval and report read. Name the "
            "export model<something>.<ext>, or write it outside the run directory"
        )
    if not force:
        holder = RunDirLock(rd).holder()
        if holder is not None:
            raise RunDirBusyError(
                f"{rd} is being trained by {describe_holder(holder)}: its checkpoint changes every epoch. Export it "
                "when the training ends, or pass --force to export the checkpoint as it is now"
            )
    return path


def export_dt(fmt: str, dt: float | None) -> float | None:
    """``dt`` checked for an export as ``fmt`` (any format, ``deploy`` included): None stays None; a time step is
    taken by the NIR format only, and must be a positive finite number of seconds (:class:`ExportOptionError`)."""
    if dt is None:
        return None
    if fmt != "nir":
        raise ExportOptionError(
            f"dt = {dt!r} applies to the NIR format only (a time step in seconds for its neurons); "
            f"the {fmt} format stores the model's own time constants: drop dt, or use --format nir"
        )
    try:
        return check_dt(dt)
    except ValueError as exc:
        raise ExportOptionError(str(exc)) from None


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    samples: int = 32,
    checkpoint: str = "last",
    device: str | None = None,
    dt: float | None = None,
    force: bool = False,
) -> ExportResult:
    """Export the finalized, compacted model of ``run_dir`` (from ``checkpoint``: "last" or "selected", rebuilt on
    ``device``: see :func:`prepare_export`) as ``fmt`` to ``out`` (default :func:`default_path`). ``dt``: the NIR
    time step in seconds (``nir`` only; default :data:`~sparsesnn.interop.nir_write.DEFAULT_DT`, what snnTorch and
    SpikingJelly read). The target is checked first (:func:`export_target`: no directory, none of the run's own
    files, not a run being trained unless ``force``); a failed write is a
    :class:`~sparsesnn.train.checkpoint.FileWriteError` naming the file and the free space."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    dt = export_dt(fmt, dt)
    path = export_target(run_dir, fmt, out, checkpoint, force=force)
    bundle = prepare_export(run_dir, samples=samples, checkpoint=checkpoint, device=device)
    diff = None
    try:
        if fmt == "pt":
            export_pt(bundle.model, path, bundle.meta())
        elif fmt == "safetensors":
            export_safetensors(bundle.model, path, bundle.meta())
        else:
            dt = DEFAULT_DT if dt is None else dt
            diff = export_nir(bundle.model, path, bundle.example, dt=dt)
    except FileWriteError:
        raise
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise write_error(path, exc) from None
    return ExportResult(path, fmt, bundle.report, int(bundle.example.shape[1]), diff, dt if fmt == "nir" else None)
