"""Planar flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

The closed-form map is the generative one, latent -> data:
``x = z + û tanh(wᵀz + b)`` with ``log|det| = log|1 + ûᵀw tanh'(wᵀz + b)|``,
so in flowspec's convention it is the node's *inverse*. ``û`` is ``u`` moved
along ``w`` until ``wᵀû = -1 + softplus(wᵀu) > -1``, which keeps the map
invertible.

The data -> latent direction has no closed form but reduces to one monotone
1-D equation: with ``a = wᵀz``, projecting ``x = z + û tanh(a + b)`` on ``w``
gives ``wᵀx = a + (wᵀû) tanh(a + b)``, increasing in ``a`` and bracketed by
``wᵀx ± |wᵀû|``. It is solved in float64 (whatever the model's dtype) by
:func:`flowspec.numerics.solve_monotone`, then ``z = x - û tanh(a + b)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.numerics import solve_monotone
from flowspec.registry import params_schema


def vector_dims(cls_name: str, in_shape) -> int:
    """The length D of a per-example vector input ``(D,)``, or a :class:`ShapeError`."""
    if not (isinstance(in_shape, tuple | list) and len(in_shape) == 1 and int(in_shape[0]) >= 1):
        raise ShapeError(f"{cls_name} takes vectors (input shape [D]), got {list(in_shape)}; "
                         "add `flatten` before it")
    return int(in_shape[0])


@NODES.register(
    "planar",
    schema=params_schema(
        init_scale={"type": "number", "exclusiveMinimum": 0, "default": 0.1,
                    "description": "std of the random initial u and w (small: near identity)"},
    ),
    category="variational",
    examples=[
        {"in_shape": [2], "params": {}},
        {"in_shape": [2], "params": {"init_scale": 1.5}},
        {"in_shape": [5], "params": {"init_scale": 0.8}},
    ],
)
class Planar(Bijector):
    """Planar flow z + û tanh(wᵀz + b): one learned hyperplane bend, closed-form when sampling.

    Made for reverse-KL variational inference (samples and their density come
    through the closed-form inverse); ``log_prob`` of given data solves a 1-D
    monotone equation per example. Tolerance: 1e-5 absolute (relative beyond
    ``|x| = 1``) in float32, far tighter in float64. A context, if the flow
    has one, is ignored.
    """

    analytic = "inverse"
    tolerance = 1e-5

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 init_scale: float = 0.1):
        super().__init__(in_shape, context_shape)
        d = vector_dims("planar", in_shape)
        self.u = nn.Parameter(torch.randn(d) * init_scale)
        self.w = nn.Parameter(torch.randn(d) * init_scale)
        self.b = nn.Parameter(torch.zeros(()))

    @classmethod
    def out_shape(cls, in_shape, **params):
        vector_dims("planar", in_shape)
        return tuple(in_shape)

    def u_hat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``û`` and ``s = softplus(wᵀu)``, so that ``wᵀû = s - 1 > -1`` (invertibility)."""
        wu = self.w @ self.u
        norm2 = (self.w @ self.w).clamp_min(torch.finfo(self.w.dtype).tiny)
        s = F.softplus(wu)
        return self.u + (s - 1.0 - wu) * self.w / norm2, s

    @staticmethod
    def _log_slope(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``log(1 + wᵀû tanh') = log(h² + s (1 - h²))``: a sum of non-negative terms, so
        it stays accurate where the map nearly flattens (``s -> 0``)."""
        return torch.log(h * h + s * (1 - h * h))

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        """Latent -> data, closed form: ``x = z + û tanh(wᵀz + b)``."""
        u, s = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)
        return z + h[:, None] * u, self._log_slope(h, s)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data -> latent: solve ``a + (wᵀû) tanh(a + b) = wᵀx`` for ``a = wᵀz``."""
        u, s = self.u_hat()
        s, b = s.double(), self.b.double()
        c = s - 1
        t = (x @ self.w).double()

        def g(a: torch.Tensor):
            h = torch.tanh(a + b)
            return a + c * h, h * h + s * (1 - h * h)

        spread = c.detach().abs()
        a = solve_monotone(g, t, lo=t.detach() - spread, hi=t.detach() + spread)
        h64 = torch.tanh(a + b)
        z = x - h64.to(x.dtype)[:, None] * u
        return z, -self._log_slope(h64, s).to(x.dtype)
