"""Optional TensorBoard logging of the epoch scalars (``run.tensorboard = true``; needs the ``tb`` extra).

The scalars are those of ``metrics.jsonl``: every numeric field of an epoch record under its own name
(``test_acc``, ``density``, ``sops``, ``energy_uJ``, ...), and the per-layer tables as ``layer_density/<layer>``
and ``firing_rates/<layer>``, at step = epoch. Files go to ``RUN_DIR/tb``::

    tensorboard --logdir runs/sweeps/mnist_dense      # every run of a sweep side by side
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sparsesnn.core.errors import ConfigError

TB_DIR = "tb"


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one epoch record (``epoch`` itself and non-numbers left out).

    >>> scalars({"epoch": 2, "test_acc": 0.5, "layer_density": {"fc": 0.1}, "note": "x", "ok": True})
    {'test_acc': 0.5, 'layer_density/fc': 0.1}
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    out[f"{key}/{sub}"] = float(v)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardLogger:
    """Writes each epoch record to ``run_dir/tb``; raises :class:`ConfigError` at once if TensorBoard is missing."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "run.tensorboard = true needs the tensorboard package: pip install 'sparsesnn[tb]' "
                "(or set run.tensorboard = false)"
            ) from None
        self.log_dir = Path(run_dir) / TB_DIR
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, record: dict[str, Any]) -> None:
        """Write the scalars of one epoch record at step ``record["epoch"]``."""
        step = int(record.get("epoch", 0))
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_tensorboard(enabled: bool | None, run_dir: str | Path) -> TensorBoardLogger | None:
    """The logger when ``run.tensorboard`` is on (``None`` otherwise): what ``Trainer.fit`` calls on rank 0."""
    return TensorBoardLogger(run_dir) if enabled else None
