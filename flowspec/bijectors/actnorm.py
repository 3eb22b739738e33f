"""ActNorm (Kingma & Dhariwal 2018): a per-channel affine map with data-dependent init."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.nets.actnorm import initial_bias_and_log_scale
from flowspec.registry import params_schema


@NODES.register(
    "actnorm",
    schema=params_schema(),
    category="normalization",
    examples=[{"in_shape": [3, 4, 4]}, {"in_shape": [5]}, {"in_shape": [2, 6]}],
    warmup=True,
)
class ActNorm(Bijector):
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
        channels = in_shape[0]
        view = (channels,) + (1,) * (len(in_shape) - 1)
        self.bias = nn.Parameter(torch.zeros(view))
        self.log_scale = nn.Parameter(torch.zeros(view))
        self.register_buffer("initialized", torch.tensor(False))
        self.positions = math.prod(in_shape[1:])
        # Python-side mirror of `initialized`: avoids a device sync every training step.
        self._init_checked = False

    @classmethod
    def out_shape(cls, in_shape, **params):
        if not in_shape or not all(isinstance(d, int) for d in in_shape):
            raise ShapeError("actnorm takes one tensor with at least one dimension")
        return tuple(in_shape)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and scale so that ``forward(x)`` has zero mean, unit variance per channel."""
        bias, log_scale = initial_bias_and_log_scale(x)
        self.bias.copy_(bias.reshape(self.bias.shape).to(self.bias.dtype))
        self.log_scale.copy_(log_scale.reshape(self.log_scale.shape).to(self.log_scale.dtype))
        self.initialized.fill_(True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (self.log_scale.sum() * self.positions).expand(x.shape[0])

    def _load_from_state_dict(self, *args, **kwargs):
        self._init_checked = False
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x, context=None):
        if self.training and not self._init_checked:
            if not bool(self.initialized):
                self.initialize(x)
            self._init_checked = True
        return (x + self.bias) * torch.exp(self.log_scale), self._logdet(x)

    def inverse(self, y, context=None):
        return y * torch.exp(-self.log_scale) - self.bias, -self._logdet(y)
