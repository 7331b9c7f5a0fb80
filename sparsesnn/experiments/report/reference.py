"""The papers' reported points, drawn beside the runs of their dataset.

A reference file (TOML ``[[point]]`` tables, or a JSON list) holds the papers' claims: ``label``, ``dataset`` (a
dataset name of sparsesnn, e.g. ``cifar10``), ``accuracy`` (%), ``density`` (connection density, %), optional
``sops`` (M), ``source`` and ``note``. Only points whose dataset matches a run's are drawn; see
``configs/reference/reported_points.toml``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparsesnn.core.errors import ConfigError
from sparsesnn.core.settings import settings_errors


class ReferencePoint(BaseModel):
    """A paper's reported result, drawn beside the runs of its dataset (``configs/reference/reported_points.toml``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(min_length=1, description="how the point is named in the plot")
    dataset: str = Field(min_length=1, description="the dataset it was measured on (drawn only beside its runs)")
    accuracy: float = Field(ge=0.0, le=100.0, description="top-1 test accuracy, %")
    density: float = Field(gt=0.0, le=100.0, description="connection density, %")
    sops: float | None = Field(None, ge=0.0, description="synaptic operations per sample, millions")
    source: str | None = Field(None, description="where the number is printed (paper, table)")
    note: str | None = Field(None, description="anything that qualifies the number")


def load_reference(path: str | Path) -> list[dict[str, Any]]:
    """Read the papers' reported points (TOML ``[[point]]`` or a JSON list); each needs label, dataset, accuracy
    (%), density (%)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read reference file {p}: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") from None
    if isinstance(data, dict):
        data = data.get("point", data.get("points"))
    if not isinstance(data, list):
        raise ConfigError(f"{p}: expected a list of points ([[point]] tables in TOML, a list in JSON)")
    points = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigError(f"{p}: point {i + 1} is not a table")
        try:
            points.append(ReferencePoint(**item).model_dump(exclude_none=True))
        except ValidationError as err:
            label = item.get("label", "?")
            raise ConfigError(f"{p}: point {i + 1} ({label}): " + "; ".join(settings_errors(err))) from None
    return points
