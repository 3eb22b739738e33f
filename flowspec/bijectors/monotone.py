"""Transformers without a closed-form inverse: sum-of-squares polynomials (SOS flows),
Bernstein polynomials, unconstrained monotonic networks (UMNN), deep (dense)
sigmoidal flows (NAF's DSF / DDSF) and Flow++'s logistic-mixture CDF.

Each is a strictly increasing bijection of the real line whose derivative is known
in closed form (UMNN: exactly its integrand), so the density direction is one pass;
the inverse solves one monotone 1-D equation per entry with the shared safeguarded
Newton/bisection solver (:func:`flowspec.numerics.solve_monotone`) to machine
precision -- the stated tolerance (1e-5, relative beyond ``|x| = 1``) is what float32
guarantees. ``theta = 0`` is the identity for ``bernstein`` and ``umnn``; ``sos`` and the
sigmoidal flows carry fixed symmetry-breaking offsets (see their docs), without which
zero-initialised conditioners could never leave their starting point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flowspec.bijectors.transformers import SOLVED_TOLERANCE, TRANSFORMERS, Shape, Transformer
from flowspec.registry import params_schema

#: softplus(_UNIT) == 1: a zero raw slope means slope 1.
_UNIT = math.log(math.expm1(1.0))
_MIN_INCREMENT = 1e-3


class Solved(Transformer):
    """A transformer inverted numerically (:meth:`Transformer.inverse`)."""

    analytic_inverse = False
    tolerance = SOLVED_TOLERANCE


@TRANSFORMERS.register(
    "sos",
    schema=params_schema(
        polynomials={"type": "integer", "minimum": 1, "default": 3,
                     "description": "number k of squared polynomials summed"},
        degree={"type": "integer", "minimum": 0, "maximum": 8, "default": 2,
                "description": "degree r of each polynomial (the map has degree 2r + 1)"},
        bound={"type": "number", "exclusiveMinimum": 0, "default": 5.0,
               "description": "the polynomial acts on [-B, B] (in x / B); linear (end "
               "slope) outside"},
    ),
    category="numerical inverse",
)
class SOSPolynomial(Solved):
    """Sum-of-squares polynomial flow (Jaini et al. 2019): on ``[-B, B]``, ``f(x) = c +
    B ∫_0^(x/B) g(t) dt`` with ``g = 1e-3 + (1 - 1e-3) / k · Σ_k (1 + p_k(t))²`` and
    ``p_k`` of degree ``r`` (integrated in closed form); linear with the end slopes outside.

    ``1 + k (r + 1)`` numbers per entry (``c`` and the coefficients of ``p_k``). Why this
    form: a polynomial in ``x`` itself grows like ``x^(2r+1)``, so a few stacked layers
    overflow outside the data, and its high-power coefficients are badly scaled; in
    ``t = x / B`` every coefficient acts on ``[-1, 1]`` and the tails are linear. The
    derivative floor is 1e-3 (a floor of 1 would forbid any contraction: the flow could
    not map wide data onto the prior). ``1 + p_k`` makes zero coefficients the identity
    with a nonzero gradient, but k identical polynomials get identical updates forever,
    so polynomial ``k ≥ 1`` carries a fixed offset ``±0.1 (1 + (k-1) // r) t^(1 + (k-1) mod
    r)`` (signs alternating): zero parameters have slopes within about 15 % of 1. The
    coefficients are soft-clipped to ±10 (``a / (1 + |a| / 10)``), so each layer's slope is
    bounded: far outside the data a conditioner's outputs grow with its input, and squared
    unbounded coefficients compounded over stacked layers overflowed to inf / NaN densities.
    """

    identity_at_zero = False
    #: the derivative floor
    min_slope = 1e-3
    #: coefficients are soft-clipped to (-10, 10): a / (1 + |a| / 10)
    max_coefficient = 10.0

    def __init__(self, shape: Shape = (), *, polynomials: int = 3, degree: int = 2,
                 bound: float = 5.0):
        super().__init__(shape)
        self.k, self.r, self.bound = int(polynomials), int(degree), float(bound)
        n = self.r + 1
        # one-hot map from the (l, m) products to the power l + m they contribute to
        index = (torch.arange(n)[:, None] + torch.arange(n)[None]).reshape(-1)
        self.register_buffer("to_power", F.one_hot(index, 2 * n - 1).double(), persistent=False)
        offset = torch.zeros(self.k, n, dtype=torch.float64)
        offset[:, 0] = 1.0
        for j in range(1, self.k):
            power = 1 + (j - 1) % self.r if self.r > 0 else 0
            offset[j, power] += 0.1 * (1 + (j - 1) // max(self.r, 1)) * (-1) ** j
        self.register_buffer("offset", offset, persistent=False)

    @classmethod
    def count(cls, polynomials: int = 3, degree: int = 2, **params):
        return 1 + int(polynomials) * (int(degree) + 1)

    def forward(self, x, theta):
        n, b, eps = self.r + 1, self.bound, self.min_slope
        shift, a = theta[..., 0], theta[..., 1:].unflatten(-1, (self.k, n))
        a = a / (1 + a.abs() / self.max_coefficient) + self.offset.to(a.dtype)
        xc = x.clamp(-b, b)
        t = xc / b
        powers = t[..., None] ** torch.arange(2 * n, device=x.device, dtype=x.dtype)
        p = (a * powers[..., None, :n]).sum(-1)  # [..., k]: the polynomials 1 + p_k at t
        products = (a[..., :, :, None] * a[..., :, None, :]).sum(-3).flatten(-2)
        coeff = products @ self.to_power.to(x.dtype)  # [..., 2r + 1]: Σ_k (1 + p_k)² by power
        steps = torch.arange(1, 2 * n, device=x.device, dtype=x.dtype)
        integral = (coeff * powers[..., 1:] / steps).sum(-1)
        scale = (1 - eps) / self.k
        slope = eps + scale * (p * p).sum(-1)
        value = shift + b * (eps * t + scale * integral)
        return value + slope * (x - xc), torch.log(slope)


@TRANSFORMERS.register(
    "bernstein",
    schema=params_schema(
        degree={"type": "integer", "minimum": 2, "maximum": 512, "default": 10,
                "description": "degree M of the Bernstein polynomial"},
        bound={"type": "number", "exclusiveMinimum": 0, "default": 3.0,
               "description": "the polynomial acts on [-B, B]; linear (end slope) outside"},
    ),
    category="numerical inverse",
)
class BernsteinPolynomial(Solved):
    """Bernstein-polynomial flow (Ramasinghe et al. 2021; Sick et al. 2021): on
    ``[-B, B]``, ``f = Σ_k θ_k b_(k,M)(t)`` with increasing coefficients from ``-B``
    to ``B``, linear with the end slopes outside.

    ``M`` numbers per entry: the coefficient increments (a softmax, each at least
    ``1e-3 / M`` of the range, so the slope ``f' = M Σ_k Δθ_k b_(k,M-1)`` is at least
    1e-3), so ``f`` maps ``[-B, B]`` onto itself, is increasing, and zero parameters
    are the identity (equally spaced coefficients). The basis is evaluated in log
    space, so high degrees do not overflow (C(512, 256) is 1e153). A Bernstein
    polynomial resolves detail of width about ``2B sqrt(t (1 - t) / M)`` at ``t =
    (x + B) / 2B`` -- coarsest mid-interval: sharp edges in a density need a high
    degree and a tight bound.
    """

    def __init__(self, shape: Shape = (), *, degree: int = 10, bound: float = 3.0):
        super().__init__(shape)
        self.m, self.bound = int(degree), float(bound)
        self.register_buffer("log_binom", self._log_binom(self.m), persistent=False)
        self.register_buffer("log_binom1", self._log_binom(self.m - 1), persistent=False)

    @staticmethod
    def _log_binom(m: int) -> torch.Tensor:
        k = torch.arange(m + 1, dtype=torch.float64)
        return torch.lgamma(torch.tensor(m + 1.0, dtype=torch.float64)) \
            - torch.lgamma(k + 1) - torch.lgamma(m - k + 1)

    @classmethod
    def count(cls, degree: int = 10, **params):
        return int(degree)

    @staticmethod
    def _basis(t: torch.Tensor, log_binom: torch.Tensor) -> torch.Tensor:
        m = log_binom.shape[0] - 1
        k = torch.arange(m + 1, device=t.device, dtype=t.dtype)
        t = t[..., None]
        # the floor: k log t with k = 0 at t = 0 has a 0 / 0 gradient (NaN) in xlogy
        floor = torch.finfo(t.dtype).tiny
        log_t, log_1mt = torch.log(t.clamp_min(floor)), torch.log((1 - t).clamp_min(floor))
        return torch.exp(log_binom.to(t.dtype) + k * log_t + (m - k) * log_1mt)

    def forward(self, x, theta):
        b, m = self.bound, self.m
        floor = _MIN_INCREMENT / m
        inc = floor + (1 - _MIN_INCREMENT) * torch.softmax(theta, -1)
        coeff = F.pad(torch.cumsum(inc, -1), (1, 0))  # θ_0 = 0 ... θ_M = 1 (of the range)
        xc = x.clamp(-b, b)
        t = (xc + b) / (2 * b)
        value = -b + 2 * b * (coeff * self._basis(t, self.log_binom)).sum(-1)
        slope = m * (inc * self._basis(t, self.log_binom1)).sum(-1)
        return value + slope * (x - xc), torch.log(slope)


class _Quadrature:
    """Nodes and weights on [-1, 1]."""

    @staticmethod
    def gauss(n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.polynomial.legendre.leggauss(n)

    @staticmethod
    def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
        n = n - 1 + (n - 1) % 2  # an even number of intervals
        k = np.arange(n + 1)
        nodes = np.cos(np.pi * k / n)
        weights = np.ones(n + 1)
        for j in range(1, n // 2 + 1):
            b = 1.0 if 2 * j == n else 2.0
            weights -= b / (4 * j * j - 1) * np.cos(2 * j * np.pi * k / n)
        weights *= np.where((k == 0) | (k == n), 1.0, 2.0) / n
        return nodes, weights


@TRANSFORMERS.register(
    "umnn",
    schema=params_schema(
        hidden={"type": "array", "items": {"type": "integer", "minimum": 1},
                "default": [32, 32], "description": "hidden widths of the integrand net"},
        embedding={"type": "integer", "minimum": 0, "default": 8,
                   "description": "numbers per entry the conditioner feeds the integrand net"},
        nodes={"type": "integer", "minimum": 2, "maximum": 256, "default": 32,
               "description": "quadrature nodes"},
        quadrature={"enum": ["gauss", "clenshaw_curtis"], "default": "gauss",
                    "description": "Gauss-Legendre or Clenshaw-Curtis on [0, x]"},
    ),
    category="numerical inverse",
)
class UMNN(Solved):
    """Unconstrained monotonic neural network (Wehenkel & Louppe 2019): ``f(x) = β +
    ∫_0^x g(u; h) du`` with ``g > 0`` a free network of ``u`` and the embedding ``h``.

    ``embedding + 1`` numbers per entry (``β`` and ``h``). ``g = 1e-3 + softplus(net)``
    (SiLU hidden layers: a smooth integrand, so the quadrature converges fast); the
    integrand net is shared by all entries and its last layer starts at zero, so the
    map starts as the identity. The log-det is ``log g(x)``, exact for the true
    integral; the quadrature's own error (far below 1e-8 at 32 Gauss nodes on
    standardised data) is inside the stated tolerance.
    """

    def __init__(self, shape: Shape = (), *, hidden: Sequence[int] = (32, 32),
                 embedding: int = 8, nodes: int = 32, quadrature: str = "gauss"):
        super().__init__(shape)
        self.embedding = int(embedding)
        widths = [1 + self.embedding, *[int(h) for h in hidden], 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.SiLU())
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.integrand = nn.Sequential(*layers)
        s, w = getattr(_Quadrature, quadrature)(int(nodes))
        self.register_buffer("nodes", torch.tensor((s + 1) / 2), persistent=False)
        self.register_buffer("weights", torch.tensor(w / 2), persistent=False)

    @classmethod
    def count(cls, embedding: int = 8, **params):
        return int(embedding) + 1

    def _g(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The integrand at points ``u [..., n]`` with embeddings ``h [..., E]``."""
        hs = h[..., None, :].expand(*u.shape, h.shape[-1])
        out = self.integrand(torch.cat([u[..., None], hs], -1))[..., 0]
        return _MIN_INCREMENT + F.softplus(out + _UNIT_G)

    def forward(self, x, theta):
        shift, h = theta[..., 0], theta[..., 1:]
        u = x[..., None] * self.nodes.to(x.dtype)
        integral = x * (self.weights.to(x.dtype) * self._g(u, h)).sum(-1)
        g = self._g(x[..., None], h)[..., 0]
        return shift + integral, torch.log(g)


#: softplus(_UNIT_G) + 1e-3 == 1
_UNIT_G = math.log(math.expm1(1.0 - _MIN_INCREMENT))


_DSF_UNITS = {"type": "integer", "minimum": 1, "default": 8,
              "description": "sigmoid units per layer"}


class _SigmoidalFlow(Solved):
    """Shared: ``layers`` deep sigmoidal layers of ``units`` units (DSF is one layer).

    Units with equal parameters get equal gradients and stay equal (the layer would
    be one sigmoid), so unit j's bias carries a fixed offset, evenly spaced in [-2, 2];
    zero parameters are a fixed increasing map, not the identity.
    """

    identity_at_zero = False

    def __init__(self, shape: Shape, units: int, layers: int):
        super().__init__(shape)
        self.units, self.layers = int(units), int(layers)
        spread = torch.linspace(-2.0, 2.0, self.units) if self.units > 1 else torch.zeros(1)
        self.register_buffer("bias_offset", spread.double(), persistent=False)

    @staticmethod
    def _sizes(units: int, layers: int) -> list[tuple[int, int]]:
        dims = [1] + [int(units)] * (int(layers) - 1) + [1]
        return list(zip(dims[:-1], dims[1:]))

    @classmethod
    def _count(cls, units: int, layers: int) -> int:
        m = int(units)
        return sum((m * a if a > 1 else 0) + 2 * m + b * m for a, b in cls._sizes(units, layers))

    def forward(self, x, theta):
        m = self.units
        h, logd = x[..., None], torch.zeros_like(x)[..., None]
        at = 0
        for a, b in self._sizes(m, self.layers):
            if a > 1:
                log_u = torch.log_softmax(theta[..., at:at + m * a].unflatten(-1, (m, a)), -1)
                at += m * a
                lin = (torch.exp(log_u) * h[..., None, :]).sum(-1)
                log_dlin = torch.logsumexp(log_u + logd[..., None, :], -1)
            else:
                lin, log_dlin = h, logd
            slope = _MIN_INCREMENT + F.softplus(theta[..., at:at + m] + _UNIT_G)
            pre = slope * lin + theta[..., at + m:at + 2 * m] + self.bias_offset.to(x.dtype)
            log_dpre = torch.log(slope) + log_dlin
            at += 2 * m
            log_w = torch.log_softmax(theta[..., at:at + b * m].unflatten(-1, (b, m)), -1)
            at += b * m
            ls, lms = F.logsigmoid(pre)[..., None, :], F.logsigmoid(-pre)[..., None, :]
            log_s = torch.logsumexp(log_w + ls, -1)
            log_1ms = torch.logsumexp(log_w + lms, -1)
            log_ds = torch.logsumexp(log_w + ls + lms + log_dpre[..., None, :], -1)
            h, logd = log_s - log_1ms, log_ds - log_s - log_1ms
        return h[..., 0], logd[..., 0]


@TRANSFORMERS.register("dsf", schema=params_schema(units=_DSF_UNITS),
                       category="numerical inverse")
class DSF(_SigmoidalFlow):
    """Deep sigmoidal flow (Huang et al. 2018, NAF): ``y = logit(Σ_j w_j σ(a_j x + b_j))``
    with ``a > 0`` and ``w`` a softmax; ``3 units`` numbers per entry.

    Evaluated in log space (log-sum-exp of log-sigmoids), so the tails neither
    saturate nor lose precision; the map is a bijection of the real line.
    """

    def __init__(self, shape: Shape = (), *, units: int = 8):
        super().__init__(shape, units, 1)

    @classmethod
    def count(cls, units: int = 8, **params):
        return cls._count(units, 1)


@TRANSFORMERS.register(
    "ddsf",
    schema=params_schema(
        units=_DSF_UNITS,
        layers={"type": "integer", "minimum": 1, "default": 2,
                "description": "stacked sigmoidal layers"},
    ),
    category="numerical inverse",
)
class DDSF(_SigmoidalFlow):
    """Deep dense sigmoidal flow (Huang et al. 2018, NAF): DSF layers stacked, each
    layer's ``units`` inputs mixed by softmax weights before the sigmoids.

    Per entry ``Σ_layers (units·inputs if inputs > 1) + 2 units + outputs·units``
    numbers; derivatives are carried through the layers in log space.
    """

    def __init__(self, shape: Shape = (), *, units: int = 8, layers: int = 2):
        super().__init__(shape, units, layers)

    @classmethod
    def count(cls, units: int = 8, layers: int = 2, **params):
        return cls._count(units, layers)




@TRANSFORMERS.register(
    "logistic_mixture",
    schema=params_schema(
        components={"type": "integer", "minimum": 1, "default": 4,
                    "description": "logistic components K of the mixture CDF"},
    ),
    category="numerical inverse",
)
class LogisticMixtureCDF(Solved):
    """Flow++'s elementwise map (Ho et al. 2019): ``y = logit(Σ_k π_k σ((x - μ_k) e^(-s_k)))
    · e^a + b``, the inverse sigmoid of a K-component logistic-mixture CDF, then affine.

    ``3K + 2`` numbers per entry (mixture logits, means, log-scales, ``a``, ``b``);
    evaluated in log space like the sigmoidal flows. Equal components would get equal
    updates forever, so component k's mean carries a fixed offset evenly spaced in
    [-2, 2]; the log-scale and ``a`` are soft-clamped to (-7, 7) and (-5, 5).
    """

    identity_at_zero = False

    def __init__(self, shape: Shape = (), *, components: int = 4):
        super().__init__(shape)
        self.k = int(components)
        spread = torch.linspace(-2.0, 2.0, self.k) if self.k > 1 else torch.zeros(1)
        self.register_buffer("mean_offset", spread.double(), persistent=False)

    @classmethod
    def count(cls, components: int = 4, **params):
        return 3 * int(components) + 2

    def forward(self, x, theta):
        k = self.k
        log_pi = torch.log_softmax(theta[..., :k], -1)
        mu = theta[..., k:2 * k] + self.mean_offset.to(x.dtype)
        log_s = 7.0 * torch.tanh(theta[..., 2 * k:3 * k] / 7.0)
        a = 5.0 * torch.tanh(theta[..., 3 * k] / 5.0)
        z = (x[..., None] - mu) * torch.exp(-log_s)
        ls, lms = F.logsigmoid(z), F.logsigmoid(-z)
        log_cdf = torch.logsumexp(log_pi + ls, -1)
        log_sf = torch.logsumexp(log_pi + lms, -1)
        log_pdf = torch.logsumexp(log_pi + ls + lms - log_s, -1)
        y = (log_cdf - log_sf) * torch.exp(a) + theta[..., 3 * k + 1]
        return y, log_pdf - log_cdf - log_sf + a


__all__: list[Any] = ["SOSPolynomial", "BernsteinPolynomial", "UMNN", "DSF", "DDSF",
                     "LogisticMixtureCDF"]
