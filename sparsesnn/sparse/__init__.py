"""The structure-learning core: masks, criteria, schedules, the learner lifecycle and the methods."""

from __future__ import annotations

from sparsesnn.sparse.learner import DenseLearner, LayerChange, StructureLearner
from sparsesnn.sparse.methods import METHODS
from sparsesnn.sparse.settings import LearnerSettings

__all__ = ["METHODS", "DenseLearner", "LayerChange", "LearnerSettings", "StructureLearner"]
