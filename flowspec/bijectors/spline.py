"""Rational-quadratic spline coupling (Durkan et al. 2019, "Neural Spline Flows").

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
from flowspec.bijectors.base import NODES, Shape
from flowspec.bijectors.coupling import NET_SCHEMA, Coupling
from flowspec.bijectors.masks import MASK_SCHEMA, PARITY_SCHEMA
from flowspec.registry import params_schema

MIN_WIDTH = 1e-3
MIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
#: the parameters of every RQ-spline node (coupling and autoregressive)
SPLINE_SCHEMA: dict[str, Any] = {
    "bins": {"type": "integer", "minimum": 2, "maximum": 512, "default": 8,
             "description": "spline bins K"},
    "bound": {"type": "number", "exclusiveMinimum": 0, "default": 3.0,
              "description": "tail bound B: the spline acts on [-B, B], identity outside"},
}
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise RQ spline with identity tails: ``(y, log|dy/dx|)``, both shaped like ``x``.

    The parameters have ``x``'s shape plus a last dim: ``K`` widths, ``K`` heights
    and ``K - 1`` interior derivatives (unconstrained; a zero derivative input
    means slope 1). With ``inverse`` it maps y -> x and returns ``log|dx/dy|``.
    Under autocast it runs in float32: a bin search on bf16 knots picks wrong bins.
    """
    if autocast_active(x.device.type):
        return run_fp32(rq_spline, x, unnormalized_widths, unnormalized_heights,
                        unnormalized_derivatives, bound, inverse)
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    xk, widths = _knots(unnormalized_widths, bound, MIN_WIDTH)
    yk, heights = _knots(unnormalized_heights, bound, MIN_HEIGHT)
    d = MIN_DERIVATIVE + F.softplus(
        F.pad(unnormalized_derivatives + _UNIT_DERIVATIVE, (1, 1), value=_UNIT_DERIVATIVE))

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
    return torch.where(inside, out, x), torch.where(inside, log_deriv, torch.zeros_like(x))


@NODES.register(
    "rq_spline_coupling",
    schema=params_schema(
        mask=MASK_SCHEMA,
        parity=PARITY_SCHEMA,
        net=NET_SCHEMA,
        **SPLINE_SCHEMA,
    ),
    category="coupling",
    examples=[
        {"in_shape": [4], "params": {"bins": 4, "net": {"mlp": {"hidden": [8]}}}},
        {"in_shape": [5], "context_shape": [2],
         "params": {"mask": "alternate", "parity": 1, "bins": 3, "bound": 2.0,
                    "net": {"mlp": {"hidden": [8], "zero_init": False}}}},
        {"in_shape": [2, 2, 3], "params": {"mask": "checkerboard", "bins": 2,
                                           "net": {"resnet": {"blocks": 1, "width": 4}}}},
        {"in_shape": [2], "params": {"bins": 2, "bound": 1.0, "net": {"mlp": {"hidden": [4]}}}},
    ],
)
class RQSplineCoupling(Coupling):
    """Rational-quadratic spline coupling (Neural Spline Flows): a far more flexible
    elementwise map than affine, still with a closed-form inverse and log-det.

    Monotone RQ spline on ``[-bound, bound]`` with ``bins`` bins; identity
    (linear tails) outside. Bin widths and heights are at least 1e-3 of the
    interval and derivatives at least 1e-3. The derivatives are offset so a
    zero conditioner output is the identity map: with the default zero-initialised
    nets the coupling starts as the identity.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None, bins: int = 8,
                 bound: float = 3.0):
        super().__init__(in_shape, context_shape, mask, parity, net, n_params=3 * bins - 1)
        self.bins = int(bins)
        self.bound = float(bound)

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, bins=8, **_):
        return cls._check(in_shape, mask, parity, net, 3 * bins - 1)

    def elementwise(self, part, h, inverse):
        h = h.movedim(1, -1)
        k = self.bins
        return rq_spline(part, h[..., :k], h[..., k:2 * k], h[..., 2 * k:], self.bound, inverse)
