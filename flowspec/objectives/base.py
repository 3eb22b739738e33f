"""The objective interface and its registry: what a training run minimises.

An objective is the one extension point of training: it says what one step
minimises, how a run is evaluated (and which metric chooses ``best``), what it
draws, and what it reports, with units. It is registered like a node::

    @OBJECTIVES.register("my_objective", schema=params_schema(sigma={...}))
    class MyObjective(Objective):
        key_metric = "my_loss"
        loss_unit = "nats"
        metrics = (Metric("my_loss", "nats", "what it measures"),)

        def __init__(self, spec, flow, params, *, data_dir=None, device=..., shard=(0, 1)):
            ...  # set steps_per_epoch, local_batch, selection_split

        def loss(self, flow, step, seed): ...      # -> (scalar loss, {metric: value})
        def evaluate(self, flow, split): ...       # -> {metric: value}
        def draw(self, flow, path, n, temperature): ...  # -> the picture written

and a spec selects it with ``train.objective: my_objective`` or
``train.objective: {my_objective: {sigma: 0.1}}`` (the parameters are validated
against ``schema``, with a did-you-mean on unknown names, like nodes; the
registry generates the spec schema of ``train.objective``). The trainer, the
``eval``/``trace``/``sample`` commands and the run's status know an objective
only through this interface -- no code compares an objective's name.

Optional hooks (defaults do nothing):

* :meth:`Objective.prepare_fresh_run` -- before the first step of a fresh run
  (fit data statistics, pin data files, describe the data for ``run.json``);
* :meth:`Objective.start_warnings` -- said when a run starts;
* :meth:`Objective.train_metrics` -- metrics derived from a training row;
* :meth:`Objective.check_spec` -- problems of the spec's ``train`` section that
  the schema cannot express (e.g. reverse KL needs ``train.target``);
* :meth:`Objective.evaluate_trained` -- ``flowspec eval`` of a trained flow;
* :meth:`Objective.reference_points` -- points of the target for ``flowspec trace``;
* :meth:`Objective.target_energy` -- the energy a flow is fitted to, if any.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from flowspec.errors import FlowspecError
from flowspec.registry import Registry, split_named

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.compile import Flow

OBJECTIVES = Registry("objective", plugin_group="flowspec.objectives",
                      title="Training objectives")

#: the objective of a spec that names none
DEFAULT_OBJECTIVE = "maximum_likelihood"


@dataclass(frozen=True)
class Metric:
    """One number an objective reports: its name in metric rows, its unit, what it is."""

    name: str
    unit: str = ""
    doc: str = ""
    #: shown in the one-line summaries of the progress log
    summary: bool = True


class Objective(abc.ABC):
    """What one training step minimises, how the run is evaluated, what it draws.

    Class attributes (declared by every objective):

    * ``key_metric`` -- the metric (lower is better) that chooses ``best`` and that
      early stopping watches;
    * ``loss_unit`` -- what the logged ``loss`` is measured in;
    * ``metrics`` -- every metric it reports (training rows and evaluations), with units;
    * ``uses_data`` -- whether it reads the spec's ``data`` section.

    Per-run attributes (set by ``__init__``):

    * ``steps_per_epoch`` -- steps counted as one epoch;
    * ``local_batch`` -- examples (or samples) this rank handles per step;
    * ``selection_split`` -- the split ``best`` is chosen on (``"val"``, ``"samples"``),
      or None when nothing may choose it (never test).

    ``flow`` passed to :meth:`loss` is the training view (through DDP and
    torch.compile: ``flow.log_prob`` and ``flow.sample_and_log_prob`` are routed, any
    other flow method a loss differentiates through is ``flow.call("method", ...)``);
    elsewhere it is the flow itself. An objective on the spec's data can subclass
    :class:`~flowspec.objectives.likelihood.MaximumLikelihood` and reuse its data,
    batches (``batch``), evaluation and drawing.
    """

    key_metric: ClassVar[str]
    loss_unit: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]] = ()
    uses_data: ClassVar[bool] = True

    steps_per_epoch: int
    local_batch: int
    selection_split: str | None = None

    @abc.abstractmethod
    def __init__(self, spec: Any, flow: Flow, params: dict[str, Any], *,
                 data_dir: Any = None, device: torch.device = torch.device("cpu"),
                 shard: tuple[int, int] = (0, 1)) -> None:
        """``params``: the objective's own parameters (its schema's defaults filled);
        ``shard = (rank, world)`` for a data-parallel rank."""

    # -- training ---------------------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, flow: Any, step: int, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss of ``step`` (scalar) and statistics to log (named as in ``metrics``)."""

    @abc.abstractmethod
    def evaluate(self, flow: Flow, split: str = "test") -> dict[str, Any]:
        """Metrics of the flow on ``split`` (or on fresh samples), ``key_metric`` among them."""

    @abc.abstractmethod
    def draw(self, flow: Flow, path: Path, n: int, temperature: float) -> Path:
        """A picture of ``n`` samples at ``temperature`` written to ``path``; the path."""

    def prepare_fresh_run(self, flow: Flow, spec: Any,
                          say: Any = print) -> tuple[Any, dict[str, Any] | None]:
        """Before the first step of a fresh run: ``(spec to store, data record for
        run.json or None)``."""
        return spec, None

    def start_warnings(self) -> list[str]:
        """Said when a run starts (e.g. a plan that cannot reach its target)."""
        return []

    def train_metrics(self, row: dict[str, Any], flow: Flow) -> dict[str, Any]:
        """Metrics derived from a training row (e.g. bits/dim from nats)."""
        return {}

    # -- the spec and trained flows ---------------------------------------------------------
    @classmethod
    def check_spec(cls, train: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        """``(dotted path, message, hint)`` problems of the ``train`` section."""
        return []

    @classmethod
    def target_energy(cls, spec: Any) -> Any:
        """The energy the flow is fitted to (None: the flow models data)."""
        return None

    @classmethod
    def evaluate_trained(cls, flow: Flow, spec: Any, *, split: str = "test",
                         data_dir: Any = None, batch_size: int = 500) -> dict[str, Any]:
        """``flowspec eval``: the metrics of a trained flow."""
        device = reference_device(flow)
        objective = cls(spec, flow, objective_params(spec), data_dir=data_dir, device=device)
        return objective.evaluate(flow, split)

    @classmethod
    def reference_points(cls, flow: Flow, spec: Any, n: int, data_dir: Any = None
                         ) -> torch.Tensor:
        """``n`` points of what the flow models, in data space (``flowspec trace``)."""
        return flow.sample(n)


def objective_entry(spec: Any):
    """The registry entry of the spec's ``train.objective``."""
    name, _ = split_named(spec.train.get("objective") or DEFAULT_OBJECTIVE)
    return OBJECTIVES.get(name)


def objective_class(spec: Any) -> type[Objective]:
    """The class of the spec's objective (for its declared metrics and class hooks)."""
    return objective_entry(spec).obj


def objective_params(spec: Any) -> dict[str, Any]:
    """The spec's objective parameters, defaults filled."""
    _, params = split_named(spec.train.get("objective") or DEFAULT_OBJECTIVE)
    return objective_entry(spec).with_defaults(params)


def build_objective(spec: Any, flow: Flow, data_dir: Any = None,
                    device: torch.device = torch.device("cpu"),
                    shard: tuple[int, int] = (0, 1)) -> Objective:
    """The spec's objective for one run; ``shard = (rank, world)`` for a data-parallel rank."""
    return objective_class(spec)(spec, flow, objective_params(spec), data_dir=data_dir,
                                 device=device, shard=shard)


def metric_units() -> dict[str, str]:
    """Unit of every metric a registered objective declares (for reports)."""
    return {m.name: m.unit for entry in OBJECTIVES for m in entry.obj.metrics if m.unit}


def metric_order(summary_only: bool = False) -> list[str]:
    """Metric names in the order the registered objectives declare them."""
    seen: dict[str, None] = {}
    for entry in OBJECTIVES:
        for m in entry.obj.metrics:
            if m.summary or not summary_only:
                seen.setdefault(m.name, None)
    return list(seen)


def reference_device(flow: Any) -> torch.device:
    """The device the flow's weights live on (CPU for a flow without any)."""
    for t in flow.parameters():
        return t.device
    for t in flow.buffers():
        return t.device
    return torch.device("cpu")


def local_batch(batch_size: int, world: int) -> int:
    """One rank's share of the global ``train.batch_size``; refuses uneven shares."""
    if batch_size % world:
        raise FlowspecError(
            f"train.batch_size {batch_size} is the global batch and must divide evenly "
            f"among {world} processes",
            hint=f"use a multiple of {world}, e.g. --set train.batch_size="
                 f"{batch_size - batch_size % world or world}")
    return batch_size // world
