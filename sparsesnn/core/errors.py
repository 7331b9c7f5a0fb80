"""The library's exception types: one per kind of bad input, each a ``ValueError`` so generic handlers still work."""

from __future__ import annotations


class SparseSNNError(Exception):
    """Base class of every error sparsesnn raises on purpose."""


class ConfigError(SparseSNNError, ValueError):
    """A configuration key, type or value is not allowed; the message names the key, the value and what is allowed."""


class DatasetError(SparseSNNError, ValueError):
    """A dataset file is missing, truncated or malformed; the message names the file and what was expected."""


class CheckpointError(SparseSNNError, ValueError):
    """A checkpoint or run directory cannot be read or does not match the run it should resume."""


class TrainingDivergedError(SparseSNNError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
