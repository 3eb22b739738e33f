"""Batch normalisation as a bijection (RealNVP, section 3.7)."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


@NODES.register(
    "batch_norm",
    schema=params_schema(
        momentum={"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                  "description": "running = (1 - momentum) * running + momentum * batch"},
        eps={"type": "number", "exclusiveMinimum": 0, "default": 1e-5,
             "description": "added to the variance"},
    ),
    category="normalization",
    examples=[{"in_shape": [3]}, {"in_shape": [2, 3, 3], "params": {"momentum": 0.5}}],
    warmup=True,
)
class BatchNorm(Bijector):
    """Batch normalisation as an invertible layer (RealNVP): normalises activations per
    channel so deep flows train, with the normalisation's log-det counted.

    ``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta`` per channel
    (dim 0; per feature for vectors). In train mode mean and (biased) variance
    come from the batch, over the batch and all positions, and update the
    running averages; the log-det treats them as constants for each example, as
    RealNVP does. In eval mode -- and in the inverse, which has no batch of data
    to measure -- the running averages are used.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape)
        view = (in_shape[0],) + (1,) * (len(in_shape) - 1)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.positions = math.prod(in_shape[1:])
        self.log_gamma = nn.Parameter(torch.zeros(view))
        self.beta = nn.Parameter(torch.zeros(view))
        self.register_buffer("running_mean", torch.zeros(view))
        self.register_buffer("running_var", torch.ones(view))

    @classmethod
    def out_shape(cls, in_shape, **_):
        if not in_shape:
            raise ShapeError("batch_norm needs at least one dimension")
        return tuple(in_shape)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims, keepdim=True)[0]
        var = x.var(dim=dims, unbiased=False, keepdim=True)[0]
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def _logdet(self, var: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        per_channel = self.log_gamma - 0.5 * torch.log(var + self.eps)
        return (per_channel.sum() * self.positions).expand(like.shape[0])

    def forward(self, x, context=None):
        mean, var = self._stats(x)
        y = (x - mean) * torch.rsqrt(var + self.eps) * torch.exp(self.log_gamma) + self.beta
        return y, self._logdet(var, x)

    def inverse(self, y, context=None):
        mean, var = self.running_mean, self.running_var
        x = (y - self.beta) * torch.exp(-self.log_gamma) * torch.sqrt(var + self.eps) + mean
        return x, -self._logdet(var, y)
