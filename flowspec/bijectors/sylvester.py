"""Sylvester flows (van den Berg et al. 2018), planar flows with an M-dimensional bottleneck.

The closed-form map is the generative one, latent -> data:
``x = z + Q R1 tanh(R2 Qᵀ z + b)`` with ``Q`` (D x M) orthonormal columns and
``R1``, ``R2`` (M x M) upper triangular, so by Sylvester's determinant identity
``log|det| = Σ_i log|1 + R1_ii R2_ii tanh'(.)_i|``. The diagonals are ``tanh`` of free
numbers (as in the paper), so ``R1_ii R2_ii > -1`` and every term is positive: the
map is invertible. In flowspec's convention it is the node's *inverse*.

Data -> latent has no closed form but is triangular in ``w = Qᵀz``: with ``w' = Qᵀx``,
``w'_i = w_i + Σ_(k>=i) R1_ik tanh((R2 w)_k + b_k)``, where only the ``k = i`` term
involves ``w_i`` given ``w_(>i)``; so ``w`` is found by back substitution, one monotone
1-D solve per coordinate (bracketed by ``±|R1_ii|``), then
``z = x - Q R1 tanh(R2 w + b)``.

Variants (``kind``): ``orthogonal`` (Q from the QR decomposition of a free D x M
matrix), ``householder`` (Q = a product of ``reflections`` reflections, M = D) and
``triangular`` (Q = I, M = D; alternate with a ``permutation`` node as the paper does).
The QR's Q jumps where the free matrix passes through linear dependence (a column of Q
flips sign when one free column crosses the span of the earlier ones), and the map jumps
with it; Householder products are smooth in their vectors (for M = D, ``householder``
reaches every rotation with 2 reflections in 2-D).
"""

from __future__ import annotations

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.linear import householder_matrix
from flowspec.bijectors.planar import vector_dims
from flowspec.errors import ShapeError
from flowspec.numerics import solve_monotone
from flowspec.registry import params_schema

KINDS = ("orthogonal", "householder", "triangular")


@NODES.register(
    "sylvester",
    schema=params_schema(
        kind={"enum": list(KINDS), "default": "orthogonal",
              "description": "how Q is parametrised (see the node's doc)"},
        m={"type": ["integer", "null"], "minimum": 1, "default": None,
           "description": "bottleneck M of the orthogonal kind (null: D); the others use D"},
        reflections={"type": "integer", "minimum": 1, "default": 2,
                     "description": "Householder reflections of the householder kind"},
        init_scale={"type": "number", "exclusiveMinimum": 0, "default": 0.1,
                    "description": "std of the random initial R1, R2 (small: near identity)"},
    ),
    category="variational",
    examples=[
        {"in_shape": [2], "params": {"init_scale": 0.8}},
        {"in_shape": [4], "params": {"m": 2, "init_scale": 1.0}},
        {"in_shape": [3], "params": {"kind": "householder", "reflections": 3, "init_scale": 1.0}},
        {"in_shape": [3], "params": {"kind": "triangular", "init_scale": 1.5}},
    ],
)
class Sylvester(Bijector):
    """Sylvester flow ``z + Q R1 tanh(R2 Qᵀ z + b)``: planar flow with an M-dimensional
    bottleneck, closed-form when sampling; for reverse-KL variational inference.

    Samples and their density come through the closed-form direction; ``log_prob``
    of given data solves M monotone 1-D equations in sequence (back substitution).
    Tolerance: 1e-5 absolute (relative beyond ``|x| = 1``) in float32, far tighter
    in float64. A context, if the flow has one, is ignored.
    """

    analytic = "inverse"
    tolerance = 1e-5

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 kind: str = "orthogonal", m: int | None = None, reflections: int = 2,
                 init_scale: float = 0.1):
        super().__init__(in_shape, context_shape)
        d = vector_dims("sylvester", in_shape)
        self.kind = kind
        self.m = self._bottleneck(d, kind, m)
        mm = self.m
        self.r1 = nn.Parameter(torch.randn(mm, mm) * init_scale)
        self.r2 = nn.Parameter(torch.randn(mm, mm) * init_scale)
        self.diag1 = nn.Parameter(torch.randn(mm) * init_scale)
        self.diag2 = nn.Parameter(torch.randn(mm) * init_scale)
        self.b = nn.Parameter(torch.zeros(mm))
        if kind == "orthogonal":
            self.q_raw = nn.Parameter(torch.randn(d, mm))
        elif kind == "householder":
            self.vectors = nn.Parameter(torch.randn(int(reflections), d))

    def export_problem(self, direction: str) -> str | None:
        """ONNX has no QR operator: the orthogonal kind's Q cannot be traced there."""
        if self.kind == "orthogonal":
            return ("kind: orthogonal builds Q by a QR decomposition of its parameters, which "
                    "ONNX has no operator for (kind: householder or triangular exports)")
        return None

    @staticmethod
    def _bottleneck(d: int, kind: str, m: int | None) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown sylvester kind '{kind}' (known: {', '.join(KINDS)})")
        if m is None:
            return d
        if kind != "orthogonal" and m != d:
            raise ShapeError(f"sylvester kind '{kind}' uses M = D = {d}; m applies to "
                             "kind: orthogonal")
        if m > d:
            raise ShapeError(f"sylvester bottleneck m = {m} exceeds the dimension D = {d}")
        return int(m)

    @classmethod
    def out_shape(cls, in_shape, kind="orthogonal", m=None, **params):
        cls._bottleneck(vector_dims("sylvester", in_shape), kind, m)
        return tuple(in_shape)

    def _factors(self, dtype: torch.dtype):
        """``(Q [D, M], R1, R2)`` with the tanh diagonals in place."""
        upper = torch.ones(self.m, self.m, device=self.r1.device).triu(1).to(dtype)
        r1 = self.r1.to(dtype) * upper + torch.diag(torch.tanh(self.diag1.to(dtype)))
        r2 = self.r2.to(dtype) * upper + torch.diag(torch.tanh(self.diag2.to(dtype)))
        if self.kind == "orthogonal":
            q, r = torch.linalg.qr(self.q_raw.to(dtype))
            q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(dtype)  # unique Q
        elif self.kind == "householder":
            q = householder_matrix(self.vectors.to(dtype))
        else:
            q = torch.eye(self.m, dtype=dtype, device=self.r1.device)
        return q, r1, r2

    @staticmethod
    def _log_slope(h: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
        """``log(1 + r1_ii r2_ii (1 - h²))`` summed over i."""
        dd = torch.diagonal(r1) * torch.diagonal(r2)
        return torch.log1p(dd * (1 - h * h)).sum(-1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        """Latent -> data, closed form: ``x = z + Q R1 tanh(R2 Qᵀ z + b)``."""
        q, r1, r2 = self._factors(z.dtype)
        h = torch.tanh((z @ q) @ r2.T + self.b.to(z.dtype))
        return z + (h @ r1.T) @ q.T, self._log_slope(h, r1, r2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data -> latent: back substitution in ``w = Qᵀz``, one 1-D solve per coordinate."""
        q, r1, r2 = self._factors(torch.float64)
        x64 = x.double()
        target = x64 @ q
        b = self.b.double()
        w: list[torch.Tensor | None] = [None] * self.m
        for i in reversed(range(self.m)):
            later = torch.stack(w[i + 1:], 1) if i + 1 < self.m else x64.new_zeros(x.shape[0], 0)
            pre_rest = later @ r2[i, i + 1:] + b[i]
            known = x64.new_zeros(x.shape[0])
            if i + 1 < self.m:  # R1_ik tanh(pre_k) for k > i, pre_k fixed by w_(>=k)
                pre_later = later @ r2[i + 1:, i + 1:].T + b[i + 1:]
                known = torch.tanh(pre_later) @ r1[i, i + 1:]
            r1ii, r2ii = r1[i, i], r2[i, i]
            t = target[:, i] - known

            def g(wi: torch.Tensor, r1ii=r1ii, r2ii=r2ii, pre_rest=pre_rest):
                h = torch.tanh(r2ii * wi + pre_rest)
                return wi + r1ii * h, 1 + r1ii * r2ii * (1 - h * h)

            spread = r1ii.detach().abs()
            w[i] = solve_monotone(g, t, lo=t.detach() - spread, hi=t.detach() + spread)
        wv = torch.stack(w, 1)  # type: ignore[arg-type]
        h = torch.tanh(wv @ r2.T + b)
        z = x64 - (h @ r1.T) @ q.T
        return z.to(x.dtype), -self._log_slope(h, r1, r2).to(x.dtype)
