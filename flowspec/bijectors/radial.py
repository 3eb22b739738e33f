"""Radial flow (Rezende & Mohamed 2015): contract or expand space around a point z0.

Generative map (latent -> data, the node's inverse):
``x = z + β h(r) (z - z0)``, ``h = 1/(α + r)``, ``r = ‖z - z0‖``, with
``α = softplus(α̃) > 0`` and ``β = -α + softplus(β̃) > -α`` (invertible), and
``log|det| = (d-1) log(1 + βh) + log(1 + βh + βh'(r) r)``.

Data -> latent: ``x - z0`` is parallel to ``z - z0``, and taking norms gives
``R = ‖x - z0‖ = r (1 + β/(α + r))``, i.e. ``r² + (α + β - R) r - αR = 0``,
whose roots have product ``-αR <= 0``: exactly one is non-negative. So unlike
planar, the radial flow inverts in closed form (no root finding); the root is
taken in the form that avoids cancellation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.planar import vector_dims
from flowspec.registry import params_schema


def _softplus_inv(y: float) -> float:
    return y + math.log(-math.expm1(-y))


@NODES.register(
    "radial",
    schema=params_schema(
        init_scale={"type": "number", "exclusiveMinimum": 0, "default": 0.1,
                    "description": "std of the random initial z0 and of β around 0"},
    ),
    category="variational",
    examples=[
        {"in_shape": [2], "params": {}},
        {"in_shape": [2], "params": {"init_scale": 1.5}},
        {"in_shape": [4], "params": {"init_scale": 0.7}},
    ],
)
class Radial(Bijector):
    """Radial flow z + β (z - z0)/(α + ‖z - z0‖): a learned radial contraction/expansion.

    Made for reverse-KL variational inference. Both directions are closed form:
    the data -> latent one solves a quadratic in the radius. A context, if the
    flow has one, is ignored.
    """

    analytic = "both"
    tolerance = 0.0

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 init_scale: float = 0.1):
        super().__init__(in_shape, context_shape)
        self.dims = vector_dims("radial", in_shape)
        self.z0 = nn.Parameter(torch.randn(self.dims) * init_scale)
        self.alpha_raw = nn.Parameter(torch.tensor(_softplus_inv(1.0)))
        # β = -α + softplus(β̃): start with β = init_scale * N(0, 1), clipped to stay > -α.
        beta = max(float(torch.randn(()) * init_scale), -0.9)
        self.beta_raw = nn.Parameter(torch.tensor(_softplus_inv(1.0 + beta)))

    @classmethod
    def out_shape(cls, in_shape, **params):
        vector_dims("radial", in_shape)
        return tuple(in_shape)

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``α``, ``β`` and ``α + β = softplus(β̃)`` (kept exact: it vanishes at the edge)."""
        alpha = F.softplus(self.alpha_raw)
        apb = F.softplus(self.beta_raw)
        return alpha, apb - alpha, apb

    @staticmethod
    def _logdet(dims: int, r: torch.Tensor, alpha: torch.Tensor, apb: torch.Tensor):
        """``log|det ∂x/∂z|`` at latent radius ``r``, from sums of non-negative terms only.

        ``1 + βh = (α + β + r)/(α + r)`` and
        ``1 + βh + βh'r = ((α + r)² + αβ)/(α + r)² = (α(α + β) + 2αr + r²)/(α + r)²``.
        """
        log_s = torch.log(alpha + r)
        return ((dims - 1) * (torch.log(apb + r) - log_s)
                + torch.log(alpha * apb + (2 * alpha + r) * r) - 2 * log_s)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        """Latent -> data: ``x = z + β (z - z0)/(α + r)``."""
        alpha, beta, apb = self.alpha_beta()
        diff = z - self.z0
        r = diff.norm(dim=1)
        x = z + (beta / (alpha + r))[:, None] * diff
        return x, self._logdet(self.dims, r, alpha, apb)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data -> latent: the non-negative root ``r`` of the quadratic, then rescale."""
        alpha, _, apb = self.alpha_beta()
        diff = x - self.z0
        big_r = diff.norm(dim=1)
        p = apb - big_r
        root = torch.sqrt(p * p + 4 * alpha * big_r)
        # r = (-p + root)/2, written without subtracting nearly equal numbers.
        pos = p > 0
        denom = torch.where(pos, p + root, torch.ones_like(p))  # no 0/0, even in gradients
        r = torch.where(pos, 2 * alpha * big_r / denom, (root - p) / 2)
        scale = (alpha + r) / (apb + r)
        return self.z0 + scale[:, None] * diff, -self._logdet(self.dims, r, alpha, apb)
