"""Learned linear layers beyond the 1x1 convolution: Householder reflections (an
orthogonal map with log-det 0) and a dense LU-parametrised linear map for vectors."""

from __future__ import annotations

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape, batch_zeros
from flowspec.bijectors.conv1x1 import InvConv1x1, _apply
from flowspec.bijectors.planar import vector_dims
from flowspec.errors import ShapeError
from flowspec.registry import params_schema

_SEED = {"type": ["integer", "null"], "default": None,
         "description": "seed of the random initialisation (null: torch's global RNG)"}


def householder_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """``H_k ... H_1`` for the rows ``v_i`` of ``vectors``, ``H = I - 2 v vᵀ / |v|²``."""
    c = vectors.shape[1]
    q = torch.eye(c, dtype=vectors.dtype, device=vectors.device)
    for v in vectors:
        q = q - 2.0 * torch.outer(v, v @ q) / (v @ v).clamp_min(torch.finfo(v.dtype).tiny)
    return q


@NODES.register(
    "householder",
    schema=params_schema(
        reflections={"type": "integer", "minimum": 1, "default": 2,
                     "description": "number k of reflections (k >= C reaches every rotation)"},
        seed=_SEED,
    ),
    category="linear",
    examples=[{"in_shape": [4]}, {"in_shape": [3], "params": {"reflections": 5, "seed": 0}},
              {"in_shape": [3, 2, 2], "params": {"reflections": 1}}],
)
class Householder(Bijector):
    """A product of ``k`` Householder reflections on the channels (features of a vector):
    a learned orthogonal mixing with log-det exactly 0 (Tomczak & Welling 2016).

    Cheaper to keep exactly orthogonal than a general matrix; the inverse is the
    transpose. Starts from random unit directions.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 reflections: int = 2, seed: int | None = None):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        self.vectors = nn.Parameter(torch.randn(int(reflections), in_shape[0], generator=gen))

    @classmethod
    def out_shape(cls, in_shape, **params):
        if not in_shape:
            raise ShapeError("householder needs at least one dimension")
        return tuple(in_shape)

    def forward(self, x, context=None):
        return _apply(x, householder_matrix(self.vectors.to(x.dtype))), batch_zeros(x)

    def inverse(self, y, context=None):
        return _apply(y, householder_matrix(self.vectors.to(y.dtype)).T), batch_zeros(y)


@NODES.register(
    "lu_linear",
    schema=params_schema(
        bias={"type": "boolean", "default": True, "description": "learn an offset too"},
        seed=_SEED,
    ),
    category="linear",
    examples=[{"in_shape": [4]}, {"in_shape": [3], "params": {"bias": False, "seed": 2}},
              {"in_shape": [1]}],
)
class LULinear(InvConv1x1):
    """A dense invertible linear map ``y = W x + b`` on vectors, ``W = P L (U + diag(±e^s))``
    (nflows' / zuko's LULinear): O(D) log-det ``Σ s``, triangular solves for the inverse.

    Starts from a random rotation (``seed``); ``P`` and the signs stay fixed. The same
    parametrisation as ``inv_conv1x1`` with ``lu: true``, plus the bias, for vectors.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 bias: bool = True, seed: int | None = None):
        vector_dims("lu_linear", in_shape)
        super().__init__(in_shape, context_shape, lu=True, seed=seed)
        self.bias = nn.Parameter(torch.zeros(in_shape[0])) if bias else None

    @classmethod
    def out_shape(cls, in_shape, **params):
        vector_dims("lu_linear", in_shape)
        return tuple(in_shape)

    def forward(self, x, context=None):
        y, ld = super().forward(x, context)
        return (y + self.bias if self.bias is not None else y), ld

    def inverse(self, y, context=None):
        if self.bias is not None:
            y = y - self.bias
        return super().inverse(y, context)
