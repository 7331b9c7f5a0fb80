"""Typed, validated run configuration: TOML in, clear errors out.

A config has the tables ``[run]``, ``[data]``, ``[model]``, ``[neuron]`` (optional: a model's own neuron defaults
apply without it), ``[optim]``, ``[schedule]``, ``[loss]`` and ``[sparse]``. Every key is checked: an unknown key, a
wrong type or an out-of-range value raises :class:`ConfigError` naming the key, the value and what is allowed.

>>> cfg = load_config_text('[data]\\nname = "digits"\\n[model]\\nname = "mlp"')
>>> cfg.optim.name
'adam'
>>> try:
...     load_config_text('[optim]\\nlr = -1')
... except ConfigError as e:
...     print(e)
invalid config:
  optim.lr = -1: Input should be greater than 0
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sparsesnn.core.errors import ConfigError
from sparsesnn.core.registry import Registry
from sparsesnn.neuron.kinds import NeuronFamilySettings
from sparsesnn.train.losses import TET_LAMBDA, TET_TARGET


def _registered(value: str, registry: Registry[Any]) -> str:
    """``value`` if ``registry`` has it, else the error that lists what it has."""
    if value not in registry:
        raise ValueError(f"unknown {registry.kind}; choose one of {registry.names()}")
    return value


def _plugin_params(what: str, registry: Registry[Any], name: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` if the plugin ``name`` of ``registry`` takes them (its ``Settings`` model), else the error that
    names each bad key, its value and the rule; nothing to check when the name itself was invalid (``None``)."""
    from sparsesnn.core.settings import problems_of

    if name is None:
        return params
    problems = problems_of(registry[name].Settings, params)
    if problems:
        raise ValueError(f"{what} {name!r}: " + "; ".join(problems))
    return params


#: which epochs model selection chooses among (``data.select_among``, ``engine.selection_candidates``)
SelectAmong = Literal["final_density", "all_epochs"]


class _Section(BaseModel):
    """Strict: a number must be written as a number (``density = 0.2``, not ``"0.2"``; an integer setting refuses
    ``2.0`` and ``true``), as TOML types it; only a float setting also takes an integer."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)


class RunConfig(_Section):
    """Where and how a run executes."""

    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9_.+=-]+$")
    out_dir: str = "runs"
    seed: int = Field(0, ge=0)
    epochs: int = Field(10, ge=1)
    device: str = "auto"
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 leaves torch's default")
    deterministic: bool = True
    checkpoint_every_steps: int = Field(0, ge=0, description="extra mid-epoch checkpoints; 0 = only per epoch")
    max_steps_per_epoch: int = Field(0, ge=0, description="cap on training batches per epoch; 0 = no cap")
    tensorboard: bool | None = Field(
        None, description="also log the epoch scalars to RUN_DIR/tb (needs the tb extra); None/false = off"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="autocast dtype of the forward pass and loss: fp32 = none; bf16; fp16 (with a gradient scaler, "
        "checkpointed); parameters and optimiser state stay float32",
    )
    compile: bool = Field(False, description="train the whole model under torch.compile (see run.compile_mode)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode when run.compile = true (reduce-overhead: CUDA graphs)"
    )
    channels_last: bool = Field(
        False, description="keep conv weights and activations channels-last (faster convs on tensor-core GPUs)"
    )

    @model_validator(mode="after")
    def _compile_mode_needs_compile(self) -> RunConfig:
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(
                f"compile_mode = {self.compile_mode!r} is set but compile = false: set run.compile = true to compile "
                "the model"
            )
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v


class DataConfig(_Section):
    """The dataset, its loader and the input encoding."""

    name: str = "digits"
    root: str | None = None
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    time_steps: int = Field(4, ge=1, le=10_000)
    encoder: Literal["direct", "poisson"] = "direct"
    normalize: bool = True
    augment: bool = False
    num_workers: int = Field(
        0,
        ge=0,
        description="loader worker processes that read and augment batches ahead of the step; 0 = the main process "
        "(in-memory datasets then read ahead in a background thread when the device is not the CPU)",
    )
    pin_memory: bool | None = Field(
        None,
        description="put batches in pinned host memory so that copies to a CUDA device run asynchronously; None = "
        "auto: on when the run's device is CUDA; never on other devices",
    )
    max_train_samples: int = Field(0, ge=0, description="use only the first N training samples; 0 = all")
    max_test_samples: int = Field(0, ge=0, description="use only the first N test samples; 0 = all")
    validation_samples: int = Field(
        0,
        ge=0,
        description="hold out N training samples (a fixed random subset, not augmented, never trained on) to "
        "validate on every epoch and select the checkpoint by; 0 = none",
    )
    validation_seed: int | None = Field(
        None,
        ge=0,
        description="seed of the validation split's permutation, independent of run.seed so that every run, seed "
        "and method of a dataset validates on the same samples; None = the library's fixed split",
    )
    select_among: SelectAmong = Field(
        "final_density",
        description="the epochs model selection chooses among: 'final_density' = the last epochs at the run's final "
        "connection density (a method whose density changes is never scored at a denser structure than it ends "
        "with); 'all_epochs' = every epoch",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the dataset")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from sparsesnn.data import DATASETS

        return _registered(v, DATASETS)

    @field_validator("params")
    @classmethod
    def _dataset_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """``[data.params]`` against the dataset's settings model, when the file is read (no file is opened)."""
        from sparsesnn.data import DATASETS

        return _plugin_params("dataset", DATASETS, info.data.get("name"), v)

    @model_validator(mode="after")
    def _seed_needs_split(self) -> DataConfig:
        if self.validation_seed is not None and not self.validation_samples:
            raise ValueError("validation_seed is set but validation_samples = 0 holds no samples out")
        return self


class ModelConfig(_Section):
    """The architecture (a registry name) and keyword arguments of its factory."""

    name: str = "mlp"
    spiking_output: bool | None = Field(None, description="append a neuron to the readout; None = model default")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from sparsesnn.models import MODELS

        return _registered(v, MODELS)

    @field_validator("params")
    @classmethod
    def _model_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """``[model.params]`` against the model's settings model, when the file is read (the dataset's
        ``in_channels``, ``num_classes`` and ``input_size`` are checked again with the data)."""
        from sparsesnn.models import MODELS

        return _plugin_params("model", MODELS, info.data.get("name"), v)


class NeuronConfig(NeuronFamilySettings):
    """Spiking neuron settings applied to every neuron of the model: the family's (declared once, in
    :class:`~sparsesnn.neuron.kinds.NeuronFamilySettings`), the kind and the kind's own settings."""

    kind: str = Field("lif", description="a registered neuron kind (sparsesnn.neuron.kinds.NEURONS)")
    params: dict[str, Any] = Field(default_factory=dict, description="the neuron kind's own settings")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from sparsesnn.neuron.kinds import NEURONS

        return _registered(v, NEURONS)

    @field_validator("params")
    @classmethod
    def _kind_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from sparsesnn.neuron.kinds import NEURONS

        return _plugin_params("neuron kind", NEURONS, info.data.get("kind"), v)


class OptimConfig(_Section):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(0.0, ge=0.0, description="max global grad norm; 0 = off")

    @field_validator("betas", mode="before")
    @classmethod
    def _betas_from_toml(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v  # TOML has arrays, not tuples

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v


class ScheduleConfig(_Section):
    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)


#: the keys of ``[loss]`` that only the TET loss reads
TET_KEYS = ("tet_lambda", "tet_target")


class LossConfig(_Section):
    """``ce``: cross-entropy on the time-averaged output; ``mse``: MSE between firing rates and one-hot targets;
    ``tet``: cross-entropy at every time step plus ``tet_lambda`` x an MSE pull towards ``tet_target`` (TET, Deng et
    al. ICLR 2022; :func:`sparsesnn.train.losses.tet_loss`).

    The TET keys are unset (None) unless ``name = "tet"``, where an unset key takes the default of the TET authors'
    code, so a resolved ``config.toml`` records the values a TET run used and a config written before these keys
    existed resolves as it did then. Setting one with another loss is an error (it would be silently ignored).
    """

    name: Literal["ce", "mse", "tet"] = "ce"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the cross-entropy (ce, tet)")
    tet_lambda: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=f"TET only: weight lambda of the MSE term, L = (1 - lambda) L_TET + lambda L_MSE; unset = "
        f"{TET_LAMBDA} (the TET authors' code) when name = 'tet'",
    )
    tet_target: float | None = Field(
        None,
        allow_inf_nan=False,
        description=f"TET only: the constant phi that L_MSE pulls every per-step output towards; unset = {TET_TARGET} "
        "(V_th, the TET authors' code) when name = 'tet'",
    )

    @model_validator(mode="before")
    @classmethod
    def _tet_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") == "tet":
            data = dict(data)
            data.setdefault("tet_lambda", TET_LAMBDA)
            data.setdefault("tet_target", TET_TARGET)
        return data

    @field_validator(*TET_KEYS)
    @classmethod
    def _tet_keys_need_tet(cls, v: float | None, info: ValidationInfo) -> float | None:
        name = info.data.get("name")  # absent when the name itself was invalid: that error is reported alone
        if v is not None and name is not None and name != "tet":
            raise ValueError(f"applies to loss.name = 'tet' only, and loss.name = {name!r}")
        return v


class SparseConfig(_Section):
    """The structure learner. ``method = "dense"`` trains without masks."""

    method: str = "dense"
    density: float = Field(1.0, gt=0.0, le=1.0)
    distribution: Literal["uniform", "er", "erk"] | None = Field(None, description="None = the method's default")
    budget: Literal["params", "macs"] | None = Field(
        None, description="what density counts: weights (params) or dense MACs (macs); None = method default"
    )
    granularity: Literal["weight", "block", "tap", "kernel"] | None = Field(
        None, description="groups pruned and grown together (sparsesnn.sparse.granularity); None = method default"
    )
    block_size: int | None = Field(None, ge=1, description="output channels per block group; None = method default")
    dense_first: bool | None = Field(None, description="keep the first Conv/Linear dense; None = method default")
    dense_last: bool | None = Field(None, description="keep the last Conv/Linear dense; None = method default")
    include: list[str] = Field(default_factory=list, description="fnmatch patterns of module names to sparsify")
    exclude: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict, description="method-specific settings")

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        from sparsesnn.sparse.methods import METHODS

        return _registered(v, METHODS)

    @field_validator("params")
    @classmethod
    def _method_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """``[sparse.params]`` against the chosen method's settings model, when the file is read."""
        from sparsesnn.sparse.methods import METHODS
        from sparsesnn.sparse.settings import params_problems

        method = info.data.get("method")  # absent when the method itself was invalid: that error is reported alone
        if method is None or method == "dense":  # the dense reference of a sweep shares its base's method params
            return v
        problems = params_problems(METHODS[method].Settings, v)
        if problems:
            raise ValueError(f"method {method!r}: " + "; ".join(problems))
        return v


class DistillConfig(_Section):
    """Knowledge distillation from a teacher (see :mod:`sparsesnn.train.distill`). Present only when distilling."""

    source: Literal["run", "module", "online"] = "run"
    teacher_run: str | None = Field(None, description="run directory of a trained sparsesnn teacher (source = run)")
    teacher_factory: str | None = Field(None, description="'package.module:function' building the teacher")
    teacher_weights: str | None = Field(None, description="state_dict file for the factory's teacher")
    teacher_input: Literal["static", "time_major"] = "static"
    teacher_model: str | None = Field(None, description="registry model trained online beside the student")
    teacher_params: dict[str, Any] = Field(default_factory=dict)
    divergence: Literal["forward", "reverse", "reversed_roles"] = "reverse"
    temperature: float = Field(4.0, gt=0.0)
    weight: float = Field(0.5, ge=0.0, le=1.0)
    cache: bool = True

    @model_validator(mode="after")
    def _source_fields(self) -> DistillConfig:
        needed = {
            "run": ("teacher_run",),
            "module": ("teacher_factory", "teacher_weights"),
            "online": ("teacher_model",),
        }
        for key in needed[self.source]:
            if getattr(self, key) is None:
                raise ValueError(f"distill.source = {self.source!r} needs distill.{key}")
        if self.divergence == "reversed_roles" and self.source != "online":
            raise ValueError("distill.divergence = 'reversed_roles' needs distill.source = 'online'")
        return self


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    neuron: NeuronConfig | None = None
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    sparse: SparseConfig = Field(default_factory=SparseConfig)
    distill: DistillConfig | None = None

    @model_validator(mode="after")
    def _distillation_present(self) -> Config:
        from sparsesnn.sparse.methods import METHODS

        if METHODS[self.sparse.method].requires_distillation and self.distill is None:
            raise ValueError(f"sparse.method = {self.sparse.method!r} learns from a teacher: add a [distill] section")
        return self

    @model_validator(mode="after")
    def _distillation_replaces_the_loss(self) -> Config:
        if self.distill is not None and self.loss.name == "tet":
            raise ValueError(
                "loss.name = 'tet' with a [distill] section: distillation trains on its own loss "
                "((1 - weight) CE + weight KD on time-averaged logits, sparsesnn.train.distill), so TET would only "
                "score the evaluation; use loss.name = 'ce' with [distill]"
            )
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> Config:
        if self.schedule.warmup_epochs >= self.run.epochs and self.schedule.warmup_epochs > 0:
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must be below run.epochs ({self.run.epochs})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with every value resolved (None entries dropped: TOML has no null)."""
        return _drop_none(self.model_dump(mode="json"))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _format_error(err: ValidationError) -> str:
    lines = ["invalid config:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (check the spelling; see `sparsesnn info --config-keys`)")
        elif e["type"] == "missing":
            lines.append(f"  {loc}: required key is missing")
        else:
            shown = e.get("input")
            if isinstance(shown, dict):  # a table: the message names the key inside it
                lines.append(f"  {loc or '(top level)'}: {msg}")
            else:
                lines.append(f"  {loc or '(top level)'} = {_toml_repr(shown)}: {msg}")
    return "\n".join(lines)


def _toml_repr(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


#: tables that are one setting each (a plugin's keyword settings), not sections: kept whole by :func:`flatten`
WHOLE_TABLES = frozenset({"params", "teacher_params"})


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys; ``params`` tables (and empty tables) stay whole values. The one rule for the
    config's differences and the report's columns.

    >>> flatten({"sparse": {"method": "rigl", "params": {"update_every": 2}}, "distill": {}})
    {'sparse.method': 'rigl', 'sparse.params': {'update_every': 2}, 'distill': {}}
    """
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in WHOLE_TABLES:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: Config, b: Config, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Dotted keys whose resolved values differ between two configs (``ignore`` left out), as ``key: a != b``."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    keys = sorted((set(fa) | set(fb)) - ignore)
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in keys if fa.get(k) != fb.get(k)]


def validate_config(data: dict[str, Any]) -> Config:
    """Validate a nested dict (as read from TOML) into a :class:`Config`, or raise :class:`ConfigError`."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config_text(text: str, overrides: list[str] | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config is not valid TOML: {exc}") from None
    for item in overrides or []:
        apply_override(data, item)
    return validate_config(data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML config file, apply ``--set key=value`` overrides, validate."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        return load_config_text(text, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_override_value(raw: str) -> Any:
    """Parse the value of ``--set key=value`` as a TOML value; bare words that are not TOML stay strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to a nested dict in place."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set has an empty key in {item!r}")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a table")
        node = child
    node[parts[-1]] = parse_override_value(raw.strip())


def config_keys() -> list[str]:
    """Every allowed dotted key with its type and default, for ``sparsesnn info --config-keys``."""
    out = []
    for section, field in Config.model_fields.items():
        sub = field.annotation
        sub_model = next(
            (a for a in getattr(sub, "__args__", (sub,)) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if sub_model is None:
            continue
        for name, f in sub_model.model_fields.items():
            default = f.get_default(call_default_factory=True)
            out.append(f"{section}.{name} (default {default!r}){': ' + f.description if f.description else ''}")
    return out
