"""Reverse-KL variational inference on an energy: fit q (the flow) to p ∝ exp(-U).

``KL(q‖p) = E_q[log q(x) + U(x)] + log Z``; the first term (the variational free
energy) needs only samples of q and their log-density, which the flow gives in
one inverse walk (noise -> data, closed form for planar/radial). Training
minimises ``E_q[log q + β U]`` with β annealed linearly from ``beta0`` to 1 as in
Rezende & Mohamed 2015 (early on the flow may spread out before committing).
The annealing length is ``train.anneal.steps`` (fixed) or ``train.anneal.fraction``
of the run (follows ``--set train.steps``); a fixed length longer than the run is
warned about at start (:func:`anneal_plan`), since β then never reaches 1 and the
flow fits a flattened target. The estimates of a trained flow
(:func:`~flowspec.energies.evaluate_reverse_kl`) live with the energies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flowspec.energies import energy_log_z, evaluate_reverse_kl, importance_ess
from flowspec.errors import SpecError
from flowspec.objectives.base import OBJECTIVES, Metric, Objective, local_batch

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.compile import Flow

__all__ = ["ReverseKL", "anneal_plan", "beta_schedule", "evaluate_reverse_kl",
           "importance_ess", "reverse_kl_loss"]


def beta_schedule(step: int, beta0: float, anneal_steps: int) -> float:
    """Inverse temperature at ``step``: ``beta0`` at 0, linearly up to 1 at ``anneal_steps``."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return 1.0
    return beta0 + (1.0 - beta0) * max(step, 0) / anneal_steps


def reverse_kl_loss(
    flow: Any, energy: Any, n: int, beta: float = 1.0, context: Any = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mean(log q(x) + β U(x))`` over ``n`` samples of the flow, and detached statistics.

    Stats: ``free_energy`` (``E[log q + U]``, β = 1), ``kl_nats`` (free energy + log Z,
    when the energy has a ``log_z``) and ``ess`` (importance-sampling efficiency).
    """
    x, log_q = flow.sample_and_log_prob(n, context=context)
    u = energy(x)
    loss = (log_q + beta * u).mean()
    with torch.no_grad():
        free = (log_q + u).mean()
        stats = {"free_energy": free, "ess": importance_ess(-u - log_q)}
        log_z = energy_log_z(energy)
        if log_z is not None:
            stats["kl_nats"] = free + log_z
    return loss, stats


@OBJECTIVES.register("reverse_kl", category="energy")
class ReverseKL(Objective):
    """``E_q[log q + β U]`` on the energy ``train.target`` (no data), sampling through the
    flow's inverse, β annealed by ``train.anneal``; evaluated on fresh samples of the
    flow, so the evaluation itself is a fair basis for choosing ``best``."""

    key_metric = "kl_nats"
    selection_split = "samples"
    #: ``loss`` is E_q[log q + β U] per sample (not per dim)
    loss_unit = "nats"
    uses_data = False
    metrics = (
        Metric("kl_nats", "nats", "KL(q‖p) = free energy + log Z (when the energy has one)"),
        Metric("ess", "", "importance-sampling effective sample size fraction, in (0, 1]"),
        Metric("free_energy", "nats", "E_q[log q + U] at β = 1"),
        Metric("beta", "", "inverse temperature of the annealed target"),
        Metric("log_z", "nats", "log of the energy's normaliser (quadrature)", summary=False),
    )

    def __init__(self, spec: Any, flow: Flow, params: dict[str, Any], *, data_dir: Any = None,
                 device: torch.device = torch.device("cpu"), shard: tuple[int, int] = (0, 1)):
        cfg = spec.train
        self.energy = self.target_energy(spec)
        self.batch_size = cfg["batch_size"]
        self.local_batch = local_batch(self.batch_size, shard[1])  # samples per rank
        self.steps_per_epoch = cfg["steps_per_epoch"] or 1000
        self.device = device
        total = cfg["steps"] or cfg["epochs"] * self.steps_per_epoch
        self.beta0, self.anneal_steps, self._warnings = anneal_plan(cfg.get("anneal"), total)

    def start_warnings(self) -> list[str]:
        return list(self._warnings)

    def beta(self, step: int) -> float:
        return beta_schedule(step, self.beta0, self.anneal_steps)

    def loss(self, flow: Any, step: int, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        beta = self.beta(step)
        loss, stats = reverse_kl_loss(flow, self.energy, self.local_batch, beta)
        return loss, {**stats, "beta": beta}

    def evaluate(self, flow: Flow, split: str = "test", max_batches: int | None = None) -> dict:
        return evaluate_reverse_kl(flow, self.energy)

    def draw(self, flow: Flow, path: Path, n: int, temperature: float) -> Path:
        from flowspec.viz.energy import plot_energy_comparison
        from flowspec.viz.notes import run_title

        return plot_energy_comparison(flow, self.energy, path, n_samples=n,
                                      temperatures=[temperature], title=run_title(flow))

    @classmethod
    def check_spec(cls, train: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        if train.get("target") is None:
            return [("train.objective", "reverse_kl needs a target energy",
                     "add train.target, e.g. target: U1")]
        return []

    @classmethod
    def target_energy(cls, spec: Any) -> Any:
        from flowspec.energies import build_energy

        if spec.train.get("target") is None:
            raise SpecError("train.objective is reverse_kl but train.target is not set",
                            hint="e.g. target: U1")
        return build_energy(spec.train["target"])


def anneal_plan(anneal: dict | None, total: int) -> tuple[float, int, list[str]]:
    """``(beta0, anneal steps, warnings)`` of a ``train.anneal`` section for a run of
    ``total`` steps. ``fraction`` follows the run's length; a fixed ``steps`` longer
    than the run leaves β below 1 at the end, which fits the wrong target: warned."""
    if not anneal:
        return 1.0, 0, []
    beta0, steps, fraction = anneal["beta0"], anneal.get("steps", 0), anneal.get("fraction")
    if fraction is not None:
        if steps:
            raise SpecError("train.anneal: give steps or fraction, not both",
                            hint="fraction: 0.5 anneals over the first half of the run")
        return beta0, max(1, round(fraction * total)), []
    warnings = []
    if steps > total:
        end = beta_schedule(total, beta0, steps)
        warnings.append(
            f"train.anneal.steps ({steps}) is longer than the run ({total} steps): β ends at "
            f"{end:.2f}, not 1, so the flow fits a flattened target. Use --set "
            f"train.anneal.steps={total // 2}, or write anneal: {{fraction: 0.5}} in the spec "
            f"(annealing over half the run, whatever its length)")
    return beta0, steps, warnings
