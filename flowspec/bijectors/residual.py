"""Residual flows (Behrmann et al. 2019 "Invertible Residual Networks"; Chen et al.
2019 "Residual Flows for Invertible Generative Modeling").

Data -> latent is ``y = x + g(x)`` with ``g`` contractive (``Lip(g) < 1``): a
Lipschitz-constrained net (:mod:`flowspec.nets.lipschitz`) whose every linear map
is spectrally normalised to the node's ``lipschitz`` coefficient. Then the map is
a bijection of R^D and its inverse is the fixed point of ``x ← y - g(x)``, which
converges geometrically at rate ``lipschitz``.

The iteration stops when ``|x_{k+1} - x_k| · L/(1-L)`` -- a bound on the distance
to the fixed point -- is below ``inverse_tol`` (plus float rounding) in every
entry, or after ``max_iter`` steps; rows that did not converge are set to NaN and
reported with an :class:`InverseNotConverged` warning, never returned as if solved.

Log-det ``log det(I + J_g)``: see :mod:`flowspec.bijectors.logdet_estimators`.
``logdet`` picks the training-time method; evaluation (eval mode, or no
gradients) uses the exact Jacobian when ``D ≤ exact_dims`` and otherwise the
unbiased Russian-roulette estimate with ``eval_exact_terms`` exact terms; the
node's :attr:`Residual.eval_logdet` says which.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.logdet_estimators import exact_logdet, roulette_logdet, series_logdet
from flowspec.errors import ShapeError
from flowspec.nets import build_net
from flowspec.nets.base import require_net
from flowspec.registry import params_schema, ref

VECTOR_NET: dict[str, Any] = {"lipschitz_mlp": {"hidden": [128, 128]}}
IMAGE_NET: dict[str, Any] = {"lipschitz_cnn": {"width": 64}}


class InverseNotConverged(UserWarning):
    """A fixed-point inverse stopped at its iteration cap; its rows are NaN."""


def _default_net(in_shape: Shape) -> dict[str, Any]:
    return IMAGE_NET if len(in_shape) == 3 else VECTOR_NET


def _check_lipschitz_net(net: Any, in_shape: Shape) -> None:
    """Refuse a net that does not constrain its Lipschitz constant (at the spec's line)."""
    require_net(net if net is not None else _default_net(in_shape), in_shape,
                lambda cls: hasattr(cls, "set_lipschitz"),
                lambda name, constrained: (
                    f"residual needs a Lipschitz-constrained net ({', '.join(constrained)}); "
                    f"'{name}' has no spectral-norm constraint, so x + g(x) might not be "
                    "invertible"))


@NODES.register(
    "residual",
    schema=params_schema(
        net={"anyOf": [ref("net"), {"type": "null"}], "default": None,
             "description": "the contractive branch g, a Lipschitz-constrained net (null: "
                            "{lipschitz_mlp: {hidden: [128, 128]}} on vectors, "
                            "{lipschitz_cnn: {width: 64}} on images)"},
        lipschitz={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                   "default": 0.97, "description": "spectral-norm bound of every linear map of g"},
        logdet={"enum": ["auto", "exact", "series", "russian_roulette"], "default": "auto",
                "description": "training log-det: full Jacobian, i-ResNet series, or the "
                               "unbiased Russian-roulette estimator (auto: exact when "
                               "D ≤ exact_dims, else russian_roulette)"},
        series_terms={"type": "integer", "minimum": 1, "default": 5,
                      "description": "terms of the truncated power series (logdet: series)"},
        exact_terms={"type": "integer", "minimum": 0, "default": 2,
                     "description": "terms always computed by the Russian-roulette estimator"},
        roulette_p={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                    "default": 0.5, "description": "geometric parameter of the random "
                                                   "number of further terms"},
        probe={"enum": ["gaussian", "rademacher"], "default": "gaussian",
               "description": "Hutchinson trace probe of the estimators"},
        exact_dims={"type": "integer", "minimum": 0, "default": 16,
                    "description": "largest D whose log-det is computed exactly in evaluation"},
        eval_exact_terms={"type": "integer", "minimum": 1, "default": 20,
                          "description": "exact terms of the Russian-roulette estimate used "
                                         "in evaluation when D > exact_dims"},
        inverse_tol={"type": "number", "exclusiveMinimum": 0, "default": 1.0e-6,
                     "description": "absolute error bound at which the fixed-point inverse stops"},
        max_iter={"type": "integer", "minimum": 1, "default": 1000,
                  "description": "fixed-point iterations before the inverse reports failure"},
    ),
    category="residual",
    examples=[
        {"in_shape": [2], "params": {"net": {"lipschitz_mlp": {"hidden": [8, 8]}},
                                     "logdet": "exact"}},
        {"in_shape": [3], "context_shape": [2],
         "params": {"net": {"lipschitz_mlp": {"hidden": [6]}}, "lipschitz": 0.9}},
        {"in_shape": [1, 3, 3], "params": {"net": {"lipschitz_cnn": {"width": 4}},
                                           "lipschitz": 0.8}},
    ],
)
class Residual(Bijector):
    """Invertible residual block ``y = x + g(x)``, ``g`` spectrally normalised to ``lipschitz``.

    Free-form Jacobian (no triangular structure); the inverse is a fixed-point
    iteration (tolerance ``inverse_tol``, default 1e-6; non-convergence is reported,
    rows set to NaN), the log-det is exact for small D and the unbiased Russian-roulette
    estimate (Residual Flows) otherwise -- ``eval_logdet`` names the one used in
    evaluation. Contract tolerance: ``inverse_tol``.
    """

    analytic = "forward"
    tolerance = 1e-6
    exports = "none"
    export_note = ("its log-det needs autograd (Jacobian, power series or a random estimate) "
                   "and its inverse a fixed-point iteration: no static graph")
    inverse_doc = ("inverse numerical, fixed-point iteration (tol inverse_tol, 1e-06 by default; "
                   "rows that do not converge in max_iter are NaN, with a warning)")

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 net: Any = None, lipschitz: float = 0.97, logdet: str = "auto",
                 series_terms: int = 5, exact_terms: int = 2, roulette_p: float = 0.5,
                 probe: str = "gaussian", exact_dims: int = 16, eval_exact_terms: int = 20,
                 inverse_tol: float = 1.0e-6, max_iter: int = 1000):
        super().__init__(in_shape, context_shape)
        _check_lipschitz_net(net, tuple(in_shape))
        self.g = build_net(net if net is not None else _default_net(tuple(in_shape)),
                           tuple(in_shape), tuple(in_shape), context_shape)
        self.g.set_lipschitz(lipschitz)
        self.lipschitz, self.dims = float(lipschitz), math.prod(in_shape)
        self.logdet, self.series_terms = logdet, series_terms
        self.exact_terms, self.roulette_p, self.probe = exact_terms, roulette_p, probe
        self.exact_dims, self.eval_exact_terms = exact_dims, eval_exact_terms
        self.inverse_tol, self.max_iter = float(inverse_tol), max_iter
        self.tolerance = max(type(self).tolerance, self.inverse_tol)

    @classmethod
    def out_shape(cls, in_shape, net=None, **params):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"residual takes vectors [D] or images [C, H, W], "
                             f"got {list(in_shape)}")
        _check_lipschitz_net(net, tuple(in_shape))
        return tuple(in_shape)

    @property
    def eval_logdet(self) -> str:
        """The log-det used in evaluation, in words (for reports)."""
        if self.dims <= self.exact_dims:
            return "exact"
        return (f"russian_roulette(exact_terms={self.eval_exact_terms}, p={self.roulette_p}; "
                "unbiased estimate)")

    def _method(self) -> str:
        small = self.dims <= self.exact_dims
        if self.training and torch.is_grad_enabled():  # training: the chosen method
            if self.logdet != "auto":
                return self.logdet
            return "exact" if small else "russian_roulette"
        return "exact" if small else "eval_roulette"  # evaluation: exact where D allows

    def _logdet(self, x: torch.Tensor, gx: torch.Tensor, method: str, graph: bool):
        if method == "exact":
            return exact_logdet(x, gx, graph)
        if method == "series":
            return series_logdet(x, gx, self.series_terms, graph, self.probe)
        terms = self.eval_exact_terms if method == "eval_roulette" else self.exact_terms
        return roulette_logdet(x, gx, terms, self.roulette_p, graph, self.probe)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data -> latent, ``x + g(x)``, with the log-det of the current method."""
        graph = torch.is_grad_enabled()
        method = self._method()
        with torch.enable_grad():
            xi = x if x.requires_grad else x.detach().requires_grad_(True)
            gx = self.g(xi, context)
            ld = self._logdet(xi, gx, method, graph)
        y = xi + gx
        if not graph:
            return y.detach(), ld.detach()
        return y, ld

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        """Latent -> data: the fixed point of ``x ← y - g(x)``; log-det at the solution."""
        x = self._fixed_point(y.detach(), context)
        graph = torch.is_grad_enabled()
        method = "exact" if self.dims <= self.exact_dims else "eval_roulette"
        with torch.enable_grad():
            # One more contraction step with autograd: its value is (closer to) the
            # solution, and gradients reach g's parameters and y.
            xo = y - self.g(x, context)
            if not xo.requires_grad:
                xo = xo.detach().requires_grad_(True)
            ld = self._logdet(xo, self.g(xo, context), method, graph)
        if not graph:
            return xo.detach(), -ld.detach()
        return xo, -ld

    @torch.no_grad()
    def _fixed_point(self, y: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        rate = self.lipschitz / (1.0 - self.lipschitz)
        eps = torch.finfo(y.dtype).eps
        x = y - self.g(y, context)
        flat = y.reshape(y.shape[0], -1)
        done = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
        for _ in range(self.max_iter):
            nxt = y - self.g(x, context)
            step = (nxt - x).reshape(y.shape[0], -1).abs().amax(1)
            floor = 16 * eps * (1 + flat.abs().amax(1)) * (1 + rate)
            done = step * rate <= self.inverse_tol + floor
            x = nxt
            if bool(done.all()):
                return x
        bad = int((~done).sum())
        warnings.warn(
            f"residual inverse did not converge for {bad} of {y.shape[0]} examples in "
            f"{self.max_iter} fixed-point iterations (last step {float(step.max()):.3g}); "
            "those rows are NaN (raise max_iter or lower lipschitz)",
            InverseNotConverged, stacklevel=3)
        return torch.where(done.reshape(-1, *[1] * (y.dim() - 1)), x,
                           torch.full_like(x, float("nan")))
