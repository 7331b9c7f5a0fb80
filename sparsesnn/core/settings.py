"""Typed settings of the library's plugins (methods, models, datasets): the frozen pydantic base they share, its
error lines and its description table.

Each plugin declares one settings model beside its implementation: the fields, their types, ranges, defaults and a
one-line description each. The config validates a plugin's ``params`` table against it when the file is read, the
plugin validates its keywords through it, and ``sparsesnn info NAME`` prints it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class Settings(BaseModel):
    """Frozen, no unknown keys, numbers as numbers (an integer is taken for a float setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays_are_tuples(cls, data: Any) -> Any:
        """TOML and JSON have arrays, not tuples: a list given for a tuple setting is taken as one."""
        if isinstance(data, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data


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


S = TypeVar("S", bound=Settings)


def validate_settings(cls: type[S], owner: str, values: dict[str, Any]) -> S:
    """``cls(**values)``; a bad value raises ``ValueError`` naming the owner (a method, a model), the key, the value
    and the rule."""
    try:
        return cls(**values)
    except ValidationError as err:
        problems = settings_errors(err)
        unknown = any(p.endswith(": not a setting") for p in problems)
        allowed = f" (its settings: {', '.join(sorted(cls.model_fields))})" if unknown else ""
        raise ValueError(f"{owner}: " + "; ".join(problems) + allowed) from None


def problems_of(cls: type[Settings], values: dict[str, Any], hidden: frozenset[str] = frozenset()) -> list[str]:
    """What is wrong with ``values`` for ``cls``, one line each (empty: nothing); an unknown key lists the allowed
    ones except ``hidden`` (settings that come from elsewhere)."""
    try:
        cls(**values)
    except ValidationError as err:
        allowed = ", ".join(sorted(set(cls.model_fields) - hidden)) or "none"
        return [p + (f" (allowed: {allowed})" if p.endswith(": not a setting") else "") for p in settings_errors(err)]
    return []


def describe_settings(cls: type[BaseModel]) -> list[dict[str, str]]:
    """Every field of a settings model: ``name``, ``type`` (unions written with "or", so that the row fits a Markdown
    table), ``default`` and ``description``, in declaration order."""
    rows = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        text = str(annotation).replace("typing.", "") if "[" in str(annotation) or "|" in str(annotation) else None
        type_name = text or getattr(annotation, "__name__", str(annotation))
        rows.append(
            {
                "name": name,
                "type": type_name.replace(" | ", " or "),
                "default": repr(field.get_default(call_default_factory=True)),
                "description": field.description or "",
            }
        )
    return rows
