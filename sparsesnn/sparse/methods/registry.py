"""The method registry: ``METHODS["rigl"](model, optimizer, density=0.1, ...)`` builds a structure learner."""

from __future__ import annotations

from sparsesnn.core.registry import Registry
from sparsesnn.sparse.learner import StructureLearner

#: learner classes by method name; each names its settings model in ``Settings`` (:mod:`sparsesnn.sparse.settings`)
METHODS: Registry[type[StructureLearner]] = Registry("method")
