"""The method registry: ``METHODS["rigl"](model, optimizer, density=0.1, ...)`` builds a structure learner."""

from __future__ import annotations

from collections.abc import Callable

from sparsesnn.registry import Registry
from sparsesnn.sparse.learner import StructureLearner

METHODS: Registry[Callable[..., StructureLearner]] = Registry("method")
