"""Reverse-KL variational inference on an energy: fit q (the flow) to p ∝ exp(-U).

``KL(q‖p) = E_q[log q(x) + U(x)] + log Z``; the first term (the variational free
energy) needs only samples of q and their log-density, which the flow gives in
one inverse walk (noise -> data, closed form for planar/radial). Training
minimises ``E_q[log q + β U]`` with β annealed linearly from ``beta0`` to 1 as in
Rezende & Mohamed 2015 (early on the flow may spread out before committing).
The annealing length is ``train.anneal.steps`` (fixed) or ``train.anneal.fraction``
of the run (follows ``--set train.steps``); a fixed length longer than the run is
warned about at start (:func:`flowspec.train.objectives.anneal_plan`), since β then
never reaches 1 and the flow fits a flattened target.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowspec.compile import Flow
from flowspec.errors import FlowspecError


def beta_schedule(step: int, beta0: float, anneal_steps: int) -> float:
    """Inverse temperature at ``step``: ``beta0`` at 0, linearly up to 1 at ``anneal_steps``."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return 1.0
    return beta0 + (1.0 - beta0) * max(step, 0) / anneal_steps


def importance_ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size *fraction* ``(Σw)² / (n Σw²)`` of importance log-weights, in (0, 1]."""
    log_w = log_w[torch.isfinite(log_w)]
    if log_w.numel() == 0:
        return torch.zeros(())
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / log_w.numel()


def reverse_kl_loss(
    flow: Flow, energy: Any, n: int, beta: float = 1.0, context: Any = None
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
        log_z = _log_z(energy)
        if log_z is not None:
            stats["kl_nats"] = free + log_z
    return loss, stats


@torch.no_grad()
def evaluate_reverse_kl(flow: Flow, energy: Any, n: int = 20_000, batch: int = 5_000,
                        context: Any = None) -> dict[str, float]:
    """Monte-Carlo estimates on ``n`` fresh samples (β = 1).

    ``free_energy = E_q[log q + U]``, ``log_z`` (quadrature), ``kl_nats = KL(q‖p) =
    free_energy + log_z`` (>= 0 up to noise), ``ess`` = effective sample size fraction
    of the importance weights ``exp(-U - log q)``, and ``n``.
    """
    log_w = []
    for start in range(0, n, batch):
        x, log_q = flow.sample_and_log_prob(min(batch, n - start), context=context)
        log_w.append(-energy(x) - log_q)
    lw = torch.cat(log_w).double()
    finite = torch.isfinite(lw)
    free = float(-lw[finite].mean()) if bool(finite.any()) else math.inf
    out: dict[str, float] = {"free_energy": free, "ess": float(importance_ess(lw)), "n": n}
    log_z = _log_z(energy)
    if log_z is not None:
        out["log_z"] = log_z
        out["kl_nats"] = free + log_z
    if not bool(finite.all()):
        out["non_finite"] = int((~finite).sum())
    return out


def _log_z(energy: Any) -> float | None:
    """The energy's ``log Z`` if it has one (a plain callable or an unconfined U2 has none)."""
    try:
        return float(energy.log_z)
    except (AttributeError, FlowspecError):
        return None
