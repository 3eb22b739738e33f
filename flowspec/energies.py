"""Target energies for reverse-KL training: unnormalised densities ``exp(-U(z))`` on R².

U1-U4 are the four test energies of Rezende & Mohamed 2015 (Table 1), with
``w1(z) = sin(2π z1/4)``, ``w2(z) = 3 exp(-½((z1 - 1)/0.6)²)`` and
``w3(z) = 3 σ((z1 - 1)/0.3)``. U2-U4 do not confine ``z1`` at all, so
``exp(-U)`` has infinite mass on R² and ``log Z`` does not exist. Like the
reference code of BNAF (De Cao et al. 2019) every energy here adds the
confinement ``Σ_i relu(|z_i| - confine)²`` (default ``confine = 6``, well
outside the plotted [-4, 4]²): the density is unchanged where it matters and
``log Z`` is finite, so the reverse KL in nats can be reported.
``confine: null`` removes it (then only U1 has a ``log_z``).

Energies are registered in :data:`ENERGIES` and built from a spec value
(``U1`` or ``{U1: {confine: 8}}``) by :func:`build_energy`; an energy object
is called as ``energy(z[N, 2]) -> U[N]``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.nn import functional as F

from flowspec.errors import FlowspecError
from flowspec.registry import Registry, params_schema

ENERGIES = Registry("energy", plugin_group="flowspec.energies",
                    title="Energies (reverse-KL targets)")

_CONFINE = {
    "type": ["number", "null"],
    "exclusiveMinimum": 0,
    "default": 6.0,
    "description": "add Σ relu(|z_i| - confine)² so that exp(-U) is normalisable (null: off)",
}
_SCHEMA = params_schema(confine=_CONFINE)


class Energy:
    """An unnormalised log-density ``-U``; subclasses define :meth:`raw`."""

    #: dimension of the space the energy lives on.
    dims: ClassVar[int] = 2
    #: whether ``exp(-raw)`` alone has finite mass (else only with confinement).
    normalisable: ClassVar[bool] = False
    #: half-width of the square that holds the visible structure (for plots).
    plot_lim: ClassVar[float] = 4.0

    def __init__(self, confine: float | None = 6.0):
        self.confine = confine
        self._log_z: float | None = None

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        u = self.raw(z)
        if self.confine is not None:
            u = u + (F.relu(z.abs() - self.confine) ** 2).sum(1)
        return u

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__)

    def integration_lim(self) -> float:
        """A square ``[-lim, lim]²`` outside which ``exp(-U)`` is negligible (< e^-36)."""
        return (self.confine if self.confine is not None else self.plot_lim) + 6.0

    @property
    def log_z(self) -> float:
        """``log ∫ exp(-U)``, by quadrature on a grid (computed once, then cached)."""
        if self._log_z is None:
            self._log_z = log_partition(self)
        return self._log_z

    def __repr__(self) -> str:
        return f"{self.name}(confine={self.confine})"


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def _neg_log_sum_exp(*terms: torch.Tensor) -> torch.Tensor:
    """``-log Σ exp(t_i)``, stable (the paper's ``-ln(e^a + e^b)``)."""
    return -torch.logsumexp(torch.stack(terms), dim=0)


@ENERGIES.register("U1", schema=_SCHEMA, category="rezende2015")
class U1(Energy):
    """A ring of radius 2 split into two arcs (two modes on the z1 axis)."""

    normalisable = True

    def raw(self, z):
        ring = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
        return ring + _neg_log_sum_exp(-0.5 * ((z[:, 0] - 2) / 0.6) ** 2,
                                       -0.5 * ((z[:, 0] + 2) / 0.6) ** 2)


@ENERGIES.register("U2", schema=_SCHEMA, category="rezende2015")
class U2(Energy):
    """A sine wave z2 = sin(πz1/2) with Gaussian cross-section."""

    def raw(self, z):
        return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2


@ENERGIES.register("U3", schema=_SCHEMA, category="rezende2015")
class U3(Energy):
    """Two sine waves that split apart around z1 = 1 (a bump of height 3)."""

    def raw(self, z):
        a = z[:, 1] - _w1(z)
        return _neg_log_sum_exp(-0.5 * (a / 0.35) ** 2, -0.5 * ((a + _w2(z)) / 0.35) ** 2)


@ENERGIES.register("U4", schema=_SCHEMA, category="rezende2015")
class U4(Energy):
    """Two sine waves that separate for z1 > 1 (a sigmoid step of height 3)."""

    def raw(self, z):
        a = z[:, 1] - _w1(z)
        return _neg_log_sum_exp(-0.5 * (a / 0.4) ** 2, -0.5 * ((a + _w3(z)) / 0.35) ** 2)


@ENERGIES.register("gaussian", schema=_SCHEMA, category="reference")
class StandardGaussian(Energy):
    """½‖z‖²: the standard normal, log Z = log 2π exactly (a check of the KL estimates)."""

    normalisable = True

    def raw(self, z):
        return 0.5 * (z * z).sum(1)


def build_energy(value) -> Energy:
    """An energy from its spec value (``'U1'`` or ``{'U1': {'confine': 8}}``)."""
    return ENERGIES.build(value)


def log_partition(energy: Energy, lim: float | None = None, n: int = 1000,
                  chunk: int = 250_000) -> float:
    """``log Z = log ∫ exp(-U(z)) dz`` by the midpoint rule on an ``n x n`` grid (float64).

    ``lim`` (default: the energy's :meth:`~Energy.integration_lim`) is the half-width of
    the square; ``exp(-U)`` must be negligible outside it.
    """
    if not energy.normalisable and energy.confine is None:
        raise FlowspecError(f"{energy.name} has infinite mass without confinement: log Z "
                            "does not exist", hint=f"give it a confine, e.g. {{{energy.name}: "
                            "{confine: 6}}")
    lim = energy.integration_lim() if lim is None else float(lim)
    h = 2 * lim / n
    ticks = -lim + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    parts = [torch.logsumexp(-energy(c), 0) for c in pts.split(chunk)]
    return float(torch.logsumexp(torch.stack(parts), 0)) + 2 * math.log(h)


# -- how well a sampler fits an energy -----------------------------------------------------
def importance_ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size *fraction* ``(Σw)² / (n Σw²)`` of importance log-weights, in (0, 1]."""
    log_w = log_w[torch.isfinite(log_w)]
    if log_w.numel() == 0:
        return torch.zeros(())
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / log_w.numel()


def energy_log_z(energy: object) -> float | None:
    """The energy's ``log Z`` if it has one (a plain callable or an unconfined U2 has none)."""
    try:
        return float(energy.log_z)  # type: ignore[attr-defined]
    except (AttributeError, FlowspecError):
        return None


@torch.no_grad()
def evaluate_reverse_kl(flow: object, energy: object, n: int = 20_000, batch: int = 5_000,
                        context: object = None) -> dict[str, float]:
    """Monte-Carlo estimates of how well ``flow`` (a sampler with log-densities) fits
    ``exp(-U)``, on ``n`` fresh samples (β = 1).

    ``free_energy = E_q[log q + U]``, ``log_z`` (quadrature), ``kl_nats = KL(q‖p) =
    free_energy + log_z`` (>= 0 up to noise), ``ess`` = effective sample size fraction
    of the importance weights ``exp(-U - log q)``, and ``n``.
    """
    log_w = []
    for start in range(0, n, batch):
        x, log_q = flow.sample_and_log_prob(min(batch, n - start),  # type: ignore[attr-defined]
                                            context=context)
        log_w.append(-energy(x) - log_q)  # type: ignore[operator]
    lw = torch.cat(log_w).double()
    finite = torch.isfinite(lw)
    free = float(-lw[finite].mean()) if bool(finite.any()) else math.inf
    out: dict[str, float] = {"free_energy": free, "ess": float(importance_ess(lw)), "n": n}
    log_z = energy_log_z(energy)
    if log_z is not None:
        out["log_z"] = log_z
        out["kl_nats"] = free + log_z
    if not bool(finite.all()):
        out["non_finite"] = int((~finite).sum())
    return out
