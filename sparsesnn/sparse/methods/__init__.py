"""Structure-learning methods. Importing this package registers every method in :data:`METHODS`."""

from sparsesnn.sparse.methods import esl, gmp, lth, pqi, rigl, sdsnn, set, static  # noqa: F401  (register)
from sparsesnn.sparse.methods.registry import METHODS

__all__ = ["METHODS"]
