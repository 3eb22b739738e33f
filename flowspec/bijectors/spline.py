"""Rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows"), the math of
the ``rq_spline`` and ``circular_rq_spline`` transformers.

The transformed entries go through a monotone piecewise rational-quadratic
function on ``[-B, B]`` with ``K`` bins whose widths, heights and interior knot
derivatives the conditioner predicts; outside ``[-B, B]`` it is the identity
(linear tails, boundary derivatives 1). Both directions are closed-form: the
inverse solves a quadratic per entry.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from flowspec.autocast import autocast_active, run_fp32

MIN_WIDTH = 1e-3
MIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
#: the parameters of every RQ-spline node (coupling and autoregressive)
SPLINE_SCHEMA: dict[str, Any] = {
    "bins": {"type": "integer", "minimum": 2, "maximum": 512, "default": 8,
             "description": "spline bins K"},
    "bound": {"type": "number", "exclusiveMinimum": 0, "default": 3.0,
              "description": "tail bound B: the spline acts on [-B, B], identity outside"},
    "parametrization": {
        "enum": ["durkan", "zuko"], "default": "durkan",
        "description": "durkan: softmax bin sizes, derivatives 1e-3 + softplus (Durkan et al.); "
        "zuko: bin logits soft-clipped to |l| < 3.45 before the softmax, derivatives "
        "exp(softclip) in [1e-3, 1e3] (zuko; learns checkerboard faster, "
        "see benchmarks/ar_gap.py)"},
}
#: zuko's bound on the spline's slopes: the soft clips use log(1e-3)
_LOG_SLOPE = math.log(1e-3)


def _bin_logits(raw: torch.Tensor, parametrization: str) -> torch.Tensor:
    if parametrization == "zuko":
        return raw / (1 + (2 * raw / _LOG_SLOPE).abs())
    return raw


def _knot_derivatives(raw: torch.Tensor, parametrization: str) -> torch.Tensor:
    """Positive knot derivatives from raw numbers; zero raw means slope 1 in both."""
    if parametrization == "zuko":
        return torch.exp(raw / (1 + (raw / _LOG_SLOPE).abs()))
    return MIN_DERIVATIVE + F.softplus(raw + _UNIT_DERIVATIVE)
#: softplus(_UNIT_DERIVATIVE) + MIN_DERIVATIVE == 1: zero net output gives slope 1 everywhere.
_UNIT_DERIVATIVE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _knots(unnormalized: torch.Tensor, bound: float, min_size: float):
    """Bin edges ``[..., K+1]`` from -bound to bound and bin sizes ``[..., K]``."""
    k = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * k) * torch.softmax(unnormalized, dim=-1)
    edges = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    edges = 2 * bound * edges - bound
    edges = torch.cat([torch.full_like(edges[..., :1], -bound), edges[..., 1:-1],
                       torch.full_like(edges[..., :1], bound)], dim=-1)
    return edges, edges[..., 1:] - edges[..., :-1]


def rq_spline(
    x: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    bound: float,
    inverse: bool = False,
    parametrization: str = "durkan",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise RQ spline with identity tails: ``(y, log|dy/dx|)``, both shaped like ``x``.

    The parameters have ``x``'s shape plus a last dim: ``K`` widths, ``K`` heights
    and ``K - 1`` interior derivatives (unconstrained; a zero derivative input
    means slope 1). With ``inverse`` it maps y -> x and returns ``log|dx/dy|``.
    Under autocast it runs in float32: a bin search on bf16 knots picks wrong bins.
    """
    if autocast_active(x.device.type):
        return run_fp32(rq_spline, x, unnormalized_widths, unnormalized_heights,
                        unnormalized_derivatives, bound, inverse, parametrization)
    inside = (x >= -bound) & (x <= bound)
    out, log_deriv = rq_core(x.clamp(-bound, bound), unnormalized_widths, unnormalized_heights,
                             F.pad(unnormalized_derivatives, (1, 1)), bound, inverse,
                             parametrization)
    return torch.where(inside, out, x), torch.where(inside, log_deriv, torch.zeros_like(x))


def rq_core(
    xc: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    bound: float,
    inverse: bool = False,
    parametrization: str = "durkan",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline on ``[-bound, bound]`` (``xc`` inside it) with all ``K + 1`` knot
    derivatives given (a zero input means slope 1): ``(y, log|dy/dx|)``.

    :func:`rq_spline` pins the end slopes to 1 (identity tails); the circular
    spline shares one end slope between both ends.
    """
    if autocast_active(xc.device.type):
        return run_fp32(rq_core, xc, unnormalized_widths, unnormalized_heights,
                        unnormalized_derivatives, bound, inverse, parametrization)
    xk, widths = _knots(_bin_logits(unnormalized_widths, parametrization), bound, MIN_WIDTH)
    yk, heights = _knots(_bin_logits(unnormalized_heights, parametrization), bound, MIN_HEIGHT)
    d = _knot_derivatives(unnormalized_derivatives, parametrization)
    edges = yk if inverse else xk
    if torch.compiler.is_exporting():
        # ONNX has no searchsorted: count the interior edges <= x (the same bin index,
        # at K times the memory, so only in exported graphs).
        idx = (xc[..., None] >= edges[..., 1:-1]).sum(-1, keepdim=True)
    else:
        idx = torch.searchsorted(edges[..., 1:-1].contiguous(), xc[..., None].contiguous(),
                                 right=True)

    def at(t: torch.Tensor, shift: int = 0) -> torch.Tensor:
        return t.gather(-1, idx + shift)[..., 0]

    x0, w, y0, h, d0, d1 = at(xk), at(widths), at(yk), at(heights), at(d), at(d, 1)
    s = h / w
    slack = d0 + d1 - 2 * s
    if inverse:
        dy = xc - y0
        a = h * (s - d0) + dy * slack
        b = h * d0 - dy * slack
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0.0)
        xi = (2 * c / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)
        out = x0 + xi * w
    else:
        xi = ((xc - x0) / w).clamp(0.0, 1.0)
        out = y0 + h * (s * xi * xi + d0 * xi * (1 - xi)) / (s + slack * xi * (1 - xi))
    t = xi * (1 - xi)
    log_deriv = (2 * torch.log(s) + torch.log(d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2)
                 - 2 * torch.log(s + slack * t))
    if inverse:
        log_deriv = -log_deriv
    return out, log_deriv
