"""Event-driven inference of a finished sparse SNN ([deploy.md](../../docs/deploy.md)).

:func:`deploy` rewrites a model exactly (:mod:`.passes`: BatchNorm folded, LIF / PLIF and max pooling as compiled
inference loops in :mod:`.lif` and :mod:`.pool`, stateless layers on input equal over time computed once), then swaps
in event-driven Linear / Conv2d layers (:mod:`.event_layers`) where they measure faster, and returns the fastest of
the model as given, the rewritten one and the deployed one. :func:`load_deployed` reads the ``deploy`` export format
back; :func:`evaluate_deployed` checks a run's deployed model against its compacted one on the whole test split.
"""

from sparsesnn.deploy.api import (
    DeployMismatchError,
    DeployReport,
    LayerChoice,
    deploy,
    evaluate_deployed,
    export_deployed,
    export_run_deployed,
    load_deployed,
)

__all__ = [
    "DeployMismatchError",
    "DeployReport",
    "LayerChoice",
    "deploy",
    "evaluate_deployed",
    "export_deployed",
    "export_run_deployed",
    "load_deployed",
]
