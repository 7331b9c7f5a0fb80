"""``dense`` and ``static``: the baselines with no rewiring.

``static``: a random ER/ERK/uniform topology fixed at initialisation (the "static sparse" baseline of SET and
RigL). ``dense``: no masks; the same engine path, for the dense reference rows.
"""

from __future__ import annotations

from sparsesnn.sparse.learner import DenseLearner, StructureLearner
from sparsesnn.sparse.methods.registry import METHODS

METHODS.register("static")(StructureLearner)
METHODS.register("dense")(DenseLearner)
