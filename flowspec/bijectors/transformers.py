"""Monotone elementwise transformers: the map a conditioner node applies per entry.

A *conditioner* node (``coupling`` with a mask, ``autoregressive`` with a MADE,
``elementwise`` with free parameters) predicts ``P`` numbers per transformed
entry; a *transformer* turns each entry ``x`` and its ``P`` numbers ``theta``
into ``y = f(x; theta)``, increasing in ``x``, with ``log f'(x)``. Every
conditioner takes every transformer (zuko's ``univariate=`` idea), so a new
monotone map is one registration here, not one node per conditioner.

Conventions shared by every transformer:

* ``theta`` has the shape of ``x`` plus a last dim of ``P`` (:meth:`Transformer.count`);
  all numbers are unconstrained (a conditioner's raw output);
* ``theta = 0`` is the identity map, so zero-initialised conditioners start as the
  identity (the affine ``sigmoid`` form is Glow's, which starts as a scaling) -- except
  where the identity is a symmetric point the gradient cannot leave (``sos``: identical
  squared polynomials, ``dsf``/``ddsf``: identical units get identical updates
  forever), which start from a fixed near-identity map instead
  (``identity_at_zero = False``);
* ``f`` is a bijection of the real line (tails are linear or unbounded);
* transformers without a closed-form inverse (``analytic_inverse = False``) are
  inverted by the shared safeguarded Newton/bisection solver to ``tolerance``.

Transformer parameters are written in a spec as ``transformer: rq_spline`` or
``transformer: {rq_spline: {bins: 16}}``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.bijectors.spline import SPLINE_SCHEMA, rq_core, rq_spline
from flowspec.numerics import solve_monotone
from flowspec.registry import Registry, params_schema, ref, split_named

Shape = tuple[int, ...]

TRANSFORMERS = Registry("transformer", plugin_group="flowspec.transformers",
                        title="Transformers (the elementwise maps of coupling, "
                              "autoregressive, elementwise)")

#: tolerance of the numerically inverted transformers (absolute; relative beyond |x| = 1)
SOLVED_TOLERANCE = 1e-5


class Transformer(nn.Module):
    """Base class: ``Cls(shape, **params)``; ``shape`` is the per-example shape of the
    transformed entries (for transformers that own per-channel parameters)."""

    #: whether :meth:`inverse` is closed-form; otherwise it is solved to ``tolerance``
    analytic_inverse: ClassVar[bool] = True
    tolerance: ClassVar[float] = 0.0
    #: whether ``theta = 0`` is the identity (else a fixed increasing near-identity map)
    identity_at_zero: ClassVar[bool] = True

    def __init__(self, shape: Shape = (), **_: Any):
        super().__init__()
        self.shape = tuple(shape)

    @classmethod
    def count(cls, **params: Any) -> int:
        """Numbers the conditioner predicts per transformed entry."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, theta: torch.Tensor):  # type: ignore[override]
        """``(y, log dy/dx)``, both shaped like ``x``."""
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, theta: torch.Tensor):
        """``(x, log dx/dy)``; by default solved numerically (monotone 1-D problems)."""

        def fn(x: torch.Tensor):
            out, ld = self.forward(x, theta)
            return out, torch.exp(ld)

        x = solve_monotone(fn, y)
        _, ld = self.forward(x, theta)
        return x, -ld


def transformer_entry(value: Any):
    """``(entry, params with defaults)`` of a spec's transformer value."""
    name, params = split_named(value)
    entry = TRANSFORMERS.get(name)
    return entry, entry.with_defaults(params)


def transformer_count(value: Any) -> int:
    """``P`` of a spec's transformer value, without building it (for static shape checks)."""
    entry, params = transformer_entry(value)
    return int(entry.obj.count(**params))


def build_transformer(value: Any, shape: Shape) -> Transformer:
    entry, params = transformer_entry(value)
    return entry.obj(tuple(shape), **params)


# -- closed-form ------------------------------------------------------------------------------
@TRANSFORMERS.register("additive", schema=params_schema(), category="closed-form")
class Additive(Transformer):
    """``y = x + t`` (NICE): volume-preserving, one number per entry."""

    @classmethod
    def count(cls, **params):
        return 1

    def forward(self, x, theta):
        return x + theta[..., 0], torch.zeros_like(x)

    def inverse(self, y, theta):
        return y - theta[..., 0], torch.zeros_like(y)


#: floor of the sigmoid scale: its inverse multiplies by at most 1 / 1e-3 = 1000.
SIGMOID_MIN_LOG_SCALE = math.log(1e-3)
AFFINE_SCALES = ("soft", "tanh", "sigmoid", "exp")


@TRANSFORMERS.register(
    "affine",
    schema=params_schema(
        scale={"enum": list(AFFINE_SCALES), "default": "soft",
               "description": "soft: log-scale bound * tanh(h / bound) (MAF); tanh: a * tanh(h) "
               "with a learned per channel (RealNVP); sigmoid: multiplier sigmoid(h + 2) floored "
               "at 1e-3, shift first (Glow); exp: unbounded exp(h) (unstable)"},
        bound={"type": "number", "exclusiveMinimum": 0, "default": 5.0,
               "description": "the soft form's log-scale bound"},
    ),
    category="closed-form",
)
class Affine(Transformer):
    """``y = x * exp(s) + t`` with a bounded log-scale ``s``: the map of RealNVP, Glow,
    MAF and IAF, written once; the ``scale`` form says how ``s`` is bounded.

    Why bounded: an unbounded ``exp(h)`` lets one large conditioner output scale an
    entry by e^50 early in training (NaN losses), and inverses divide by it. ``soft``
    keeps every layer's log-scale in (-bound, bound) and is the identity near 0;
    ``sigmoid`` is floored so each inverse expands at most 1000x (Glow samples at
    T >= 0.7 otherwise reach inf).
    """

    def __init__(self, shape: Shape = (), *, scale: str = "soft", bound: float = 5.0):
        super().__init__(shape)
        if scale not in AFFINE_SCALES:
            raise ValueError(f"unknown scale '{scale}' (known: {', '.join(AFFINE_SCALES)})")
        self.scale, self.bound = scale, float(bound)
        if scale == "tanh":
            channels = self.shape[0] if self.shape else 1
            self.scale_factor = nn.Parameter(
                torch.ones(channels, *([1] * (len(self.shape) - 1))))

    @classmethod
    def count(cls, **params):
        return 2

    def _log_scale(self, raw: torch.Tensor) -> torch.Tensor:
        if self.scale == "soft":
            return self.bound * torch.tanh(raw / self.bound)
        if self.scale == "tanh":
            return self.scale_factor * torch.tanh(raw)
        if self.scale == "sigmoid":
            return F.logsigmoid(raw + 2.0).clamp_min(SIGMOID_MIN_LOG_SCALE)
        return raw

    def forward(self, x, theta):
        raw, shift = theta.unbind(-1)  # views: one gradient buffer in backward
        s = self._log_scale(raw)
        if self.scale == "sigmoid":
            return (x + shift) * torch.exp(s), s
        return x * torch.exp(s) + shift, s

    def inverse(self, y, theta):
        raw, shift = theta.unbind(-1)
        s = self._log_scale(raw)
        if self.scale == "sigmoid":
            return y * torch.exp(-s) - shift, -s
        return (y - shift) * torch.exp(-s), -s


@TRANSFORMERS.register("rq_spline", schema=params_schema(**SPLINE_SCHEMA),
                       category="closed-form")
class RQSpline(Transformer):
    """Monotone rational-quadratic spline (Neural Spline Flows) on ``[-bound, bound]``,
    identity outside: ``3 bins - 1`` numbers per entry, closed-form inverse."""

    def __init__(self, shape: Shape = (), *, bins: int = 8, bound: float = 3.0,
                 parametrization: str = "durkan"):
        super().__init__(shape)
        if parametrization not in ("durkan", "zuko"):
            raise ValueError(f"unknown spline parametrization '{parametrization}'")
        self.bins, self.bound, self.parametrization = int(bins), float(bound), parametrization

    @classmethod
    def count(cls, bins: int = 8, **params):
        return 3 * int(bins) - 1

    def _run(self, x, theta, inverse):
        k = self.bins
        # split, not three slices: its backward is one cat, not three zero-filled copies
        w, h, d = theta.split([k, k, k - 1], -1)
        return rq_spline(x, w, h, d, self.bound, inverse, self.parametrization)

    def forward(self, x, theta):
        return self._run(x, theta, False)

    def inverse(self, y, theta):
        return self._run(y, theta, True)


@TRANSFORMERS.register(
    "circular_rq_spline",
    schema=params_schema(
        bins={"type": "integer", "minimum": 2, "maximum": 512, "default": 8,
              "description": "spline bins K"},
    ),
    category="closed-form",
)
class CircularRQSpline(Transformer):
    """Circular rational-quadratic spline (Rezende et al. 2020, "Normalizing Flows on
    Tori and Spheres"): a diffeomorphism of the circle for angles in ``[-pi, pi)``.

    The spline maps ``[-pi, pi]`` onto itself with the same derivative at both ends
    (``3 bins`` numbers: widths, heights and ``bins`` knot derivatives, the end one
    shared), extended periodically, ``f(x + 2 pi k) = f(x) + 2 pi k``: a bijection of
    the real line that descends to the circle, with a continuous density across the
    seam. Pair it with the ``uniform`` prior on ``[-pi, pi]``.
    """

    def __init__(self, shape: Shape = (), *, bins: int = 8):
        super().__init__(shape)
        self.bins = int(bins)

    @classmethod
    def count(cls, bins: int = 8, **params):
        return 3 * int(bins)

    def _run(self, x, theta, inverse):
        k = self.bins
        w, h, d = theta.split([k, k, k], -1)
        wrapped = torch.remainder(x + math.pi, 2 * math.pi) - math.pi
        turns = (x - wrapped).detach()
        d = torch.cat([d, d[..., :1]], -1)  # the end derivative is the start's
        out, ld = rq_core(wrapped, w, h, d, math.pi, inverse)
        return out + turns, ld

    def forward(self, x, theta):
        return self._run(x, theta, False)

    def inverse(self, y, theta):
        return self._run(y, theta, True)


TRANSFORMER_SCHEMA: dict[str, Any] = {
    **ref("transformer"),
    "default": "affine",
    "description": "the monotone elementwise map (a name or {name: {params}}; "
    "see the transformer catalogue)",
}
