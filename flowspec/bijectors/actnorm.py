"""ActNorm (Kingma & Dhariwal 2018): a per-channel affine map with data-dependent init."""

from __future__ import annotations

import math

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.nets.actnorm import ActNormState
from flowspec.registry import params_schema


@NODES.register(
    "actnorm",
    schema=params_schema(),
    category="normalization",
    examples=[{"in_shape": [3, 4, 4]}, {"in_shape": [5]}, {"in_shape": [2, 6]}],
    warmup=True,
)
class ActNorm(ActNormState, Bijector):
    """Per-channel scale and bias (per feature on vectors), initialised from the first
    training batch to zero mean and unit variance: Glow's batch-size-independent
    replacement for batch norm.

    ``y = (x + bias) * exp(log_scale)`` per channel (dim 0 of the per-example
    shape; per feature for vectors); log-det = positions * sum(log_scale). The
    ``initialized`` buffer is saved in checkpoints, so a loaded model never
    re-initialises. Before initialisation the inverse is the identity.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None):
        super().__init__(in_shape, context_shape)
        self.out_shape(in_shape)
        self._setup_actnorm((in_shape[0],) + (1,) * (len(in_shape) - 1))
        self.positions = math.prod(in_shape[1:])

    @classmethod
    def out_shape(cls, in_shape, **params):
        if not in_shape or not all(isinstance(d, int) for d in in_shape):
            raise ShapeError("actnorm takes one tensor with at least one dimension")
        return tuple(in_shape)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (self.log_scale.sum() * self.positions).expand(x.shape[0])

    def forward(self, x, context=None):
        return self.normalize(x), self._logdet(x)

    def inverse(self, y, context=None):
        return y * torch.exp(-self.log_scale) - self.bias, -self._logdet(y)
