"""Training objectives, registered like nodes: see :mod:`flowspec.objectives.base`.

Importing this package registers the shipped ones (``maximum_likelihood``,
``reverse_kl``); a new objective is one :class:`Objective` subclass and one
``@OBJECTIVES.register(...)`` in a module imported here (or a plugin's
``flowspec.objectives`` entry point).
"""

from flowspec.objectives import flow_matching, likelihood, reverse_kl  # noqa: F401  (registers them)
from flowspec.objectives.base import (
    DEFAULT_OBJECTIVE,
    OBJECTIVES,
    Metric,
    Objective,
    build_objective,
    local_batch,
    metric_order,
    metric_units,
    objective_class,
    objective_params,
)

__all__ = ["DEFAULT_OBJECTIVE", "OBJECTIVES", "Metric", "Objective", "build_objective",
           "local_batch", "metric_order", "metric_units", "objective_class", "objective_params"]
