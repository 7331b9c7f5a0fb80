"""Typed settings of the structure learners: one frozen pydantic model per method, beside its implementation.

Each learner class names its model in ``Settings``. The model holds every keyword the learner takes: its fields,
types, ranges, defaults and a one-line description each. It is the one place they are declared: the learner
validates its keywords through it (``RigL(model, opt, density=0.1, update_every=50)``, or
``RigL(model, opt, settings=RigL.Settings(...))``), the config validates ``[sparse.params]`` against it when the file
is read (before any data is opened), and ``sparsesnn info <method>`` prints it.

The settings every method shares (:class:`LearnerSettings`) come from the ``[sparse]`` section (density,
distribution, layer selection) or from the run (seed and budget); a method's own settings are its
``[sparse.params]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Settings(BaseModel):
    """Frozen, no unknown keys, numbers as numbers (an integer is taken for a float setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


class LearnerSettings(Settings):
    """What every structure learner takes (the ``static`` method: a fixed random topology)."""

    density: float = Field(1.0, gt=0.0, le=1.0, description="fraction of active synapses over the masked layers")
    distribution: Literal["uniform", "er", "erk"] = Field(
        "erk", description="how the density is spread over layers: uniform, Erdos-Renyi (er) or ERK"
    )
    dense_first: bool = Field(False, description="keep the first Conv/Linear dense")
    dense_last: bool = Field(False, description="keep the last Conv/Linear dense")
    include: tuple[str, ...] = Field((), description="fnmatch patterns of the module names to mask (empty: all)")
    exclude: tuple[str, ...] = Field((), description="fnmatch patterns of module names never to mask")
    seed: int = Field(0, ge=0, description="seeds the learner's own generator (initial masks, random criteria)")
    total_steps: int = Field(0, ge=0, description="optimiser steps of the run (0: unknown; set by the engine)")
    steps_per_epoch: int = Field(0, ge=0, description="optimiser steps per epoch (0: unknown; set by the engine)")
    total_epochs: int = Field(0, ge=0, description="epochs of the run (0: unknown; set by the engine)")

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _patterns(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("a list of patterns, not one string")
        return tuple(v) if isinstance(v, list) else v


#: the shared settings: set by ``[sparse]`` itself or by the run, never in ``[sparse.params]``
SHARED_KEYS = frozenset(LearnerSettings.model_fields)


def settings_errors(err: ValidationError) -> list[str]:
    """One line per problem: ``key = value: what is wrong`` (the value as given)."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(settings)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: not a setting")
        elif "input" in e and not isinstance(e["input"], dict):
            lines.append(f"{key} = {e['input']!r}: {msg}")
        else:
            lines.append(f"{key}: {msg}")
    return lines


def validate_settings(cls: type[LearnerSettings], method: str, values: dict[str, Any]) -> LearnerSettings:
    """``cls(**values)``; a bad value raises ``ValueError`` naming the method, the key, the value and the rule."""
    try:
        return cls(**values)
    except ValidationError as err:
        problems = settings_errors(err)
        unknown = [p for p in problems if p.endswith(": not a setting")]
        allowed = f" (its settings: {', '.join(sorted(cls.model_fields))})" if unknown else ""
        raise ValueError(f"{method}: " + "; ".join(problems) + allowed) from None


def params_problems(cls: type[LearnerSettings], params: dict[str, Any]) -> list[str]:
    """What is wrong with a method's own settings (``[sparse.params]``) alone, one line each (empty: nothing); the
    shared settings belong elsewhere and are refused here."""
    shared = sorted(SHARED_KEYS & set(params))
    if shared:
        return [f"{key}: set it in [sparse] (or it comes from the run), not in [sparse.params]" for key in shared]
    try:
        cls(**params)
    except ValidationError as err:
        own = sorted(set(cls.model_fields) - SHARED_KEYS)
        return [
            p + (f" (allowed: {', '.join(own) or 'none'})" if p.endswith(": not a setting") else "")
            for p in settings_errors(err)
        ]
    return []


def describe_settings(cls: type[Settings]) -> list[dict[str, str]]:
    """Every field of a settings model: ``name``, ``type``, ``default`` and ``description``, in declaration order."""
    rows = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append(
            {
                "name": name,
                "type": str(annotation).replace("typing.", "") if "[" in str(annotation) else str(type_name),
                "default": repr(field.get_default(call_default_factory=True)),
                "description": field.description or "",
            }
        )
    return rows
