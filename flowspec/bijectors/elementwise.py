"""Elementwise maps: NICE's learned diagonal scaling and the fixed preprocessing
bijections (RealNVP's logit, a fixed affine), whose log-dets count in the likelihood."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.autocast import upcast
from flowspec.bijectors.base import NODES, Bijector, Shape, sum_except_batch
from flowspec.bijectors.transformers import (
    TRANSFORMER_SCHEMA,
    Transformer,
    build_transformer,
    transformer_count,
)
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


@NODES.register("diag_scale", schema=params_schema(), category="elementwise",
                examples=[{"in_shape": [4]}, {"in_shape": [2, 2, 3]}])
class DiagScale(Bijector):
    """NICE's diagonal scaling layer ``y = x * exp(s)`` with a learned ``s`` per entry:
    lets an otherwise volume-preserving (additive) flow change volume.

    Log-det ``sum(s)``; starts as the identity.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None):
        super().__init__(tuple(in_shape), context_shape)
        self.log_scale = nn.Parameter(torch.zeros(tuple(in_shape)))

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(x.shape[0])

    def forward(self, x, context=None):
        return x * torch.exp(self.log_scale), self._logdet(x)

    def inverse(self, y, context=None):
        return y * torch.exp(-self.log_scale), -self._logdet(y)


@NODES.register(
    "logit",
    schema=params_schema(
        alpha={"type": "number", "minimum": 0, "exclusiveMaximum": 0.5, "default": 0.05,
               "description": "squeeze [0, 1] into [alpha, 1 - alpha] before the logit"},
    ),
    category="preprocessing",
    examples=[{"in_shape": [3]}, {"in_shape": [1, 2, 2], "params": {"alpha": 1e-6}}],
    domain="unit_interval",
)
class Logit(Bijector):
    """RealNVP's preprocessing ``y = logit(alpha + (1 - 2 alpha) x)`` for data in [0, 1]:
    maps bounded pixels to the real line, where Gaussian priors live.

    The log-det includes the ``(1 - 2 alpha)`` factor, so likelihoods stay in
    units of the [0, 1] data.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 alpha: float = 0.05):
        super().__init__(tuple(in_shape), context_shape)
        if not 0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self._log_range = math.log1p(-2 * self.alpha)

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], -1).sum(1)

    def forward(self, x, context=None):
        p = self.alpha + (1 - 2 * self.alpha) * upcast(x)  # log terms: fp32 under autocast
        y = torch.log(p) - torch.log1p(-p)
        return y, self._sum(self._log_range - torch.log(p) - torch.log1p(-p))

    def inverse(self, y, context=None):
        y = upcast(y)
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        return x, self._sum(F.logsigmoid(y) + F.logsigmoid(-y) - self._log_range)


_NUMBERS = {"type": "array", "items": {"type": "number"}, "minItems": 1}


def _per_channel(value: float | Sequence[float], in_shape: Shape, name: str) -> torch.Tensor:
    """A scalar, or one value per entry of dim 0 broadcast over the other dims."""
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    values = [float(v) for v in value]
    if len(values) != in_shape[0]:
        raise ShapeError(f"affine: {name} has {len(values)} values but dim 0 has {in_shape[0]}")
    return torch.tensor(values).reshape(len(values), *([1] * (len(in_shape) - 1)))


@NODES.register(
    "affine",
    schema=params_schema(
        scale={"anyOf": [{"type": "number"}, _NUMBERS], "default": 1.0,
               "description": "multiplier: a number or one per channel/feature (nonzero)"},
        shift={"anyOf": [{"type": "number"}, _NUMBERS], "default": 0.0,
               "description": "offset: a number or one per channel/feature"},
    ),
    category="preprocessing",
    examples=[{"in_shape": [3], "params": {"scale": 2.0, "shift": -1.0}},
              {"in_shape": [2, 2, 2], "params": {"scale": [0.5, -3.0], "shift": [1.0, 0.0]}}],
)
class Affine(Bijector):
    """A fixed elementwise affine map ``y = x * scale + shift`` (e.g. ``x * 2 - 1`` to move
    [0, 1] data to [-1, 1]), with its log-det ``sum log|scale|`` counted."""

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 scale: float | Sequence[float] = 1.0, shift: float | Sequence[float] = 0.0):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape, scale=scale, shift=shift)
        dtype = torch.get_default_dtype()
        self.register_buffer("scale", _per_channel(scale, in_shape, "scale").to(dtype),
                             persistent=False)
        self.register_buffer("shift", _per_channel(shift, in_shape, "shift").to(dtype),
                             persistent=False)
        full = torch.log(self.scale.abs()).expand(tuple(in_shape))
        self._logdet_value = float(full.double().sum())

    @classmethod
    def out_shape(cls, in_shape, scale=1.0, shift=0.0, **_):
        if not in_shape:
            raise ShapeError("affine needs at least one dimension")
        s = _per_channel(scale, in_shape, "scale")
        _per_channel(shift, in_shape, "shift")
        if bool((s == 0).any()):
            raise ValueError("affine scale must be nonzero (the map would not be invertible)")
        return tuple(in_shape)

    def forward(self, x, context=None):
        return x * self.scale + self.shift, x.new_full((x.shape[0],), self._logdet_value)

    def inverse(self, y, context=None):
        return (y - self.shift) / self.scale, y.new_full((y.shape[0],), -self._logdet_value)


@NODES.register(
    "elementwise",
    schema=params_schema(transformer=TRANSFORMER_SCHEMA),
    category="elementwise",
    examples=[
        {"in_shape": [3], "params": {"transformer": {"rq_spline": {"bins": 4}}}},
        {"in_shape": [2, 2, 2], "params": {"transformer": {"affine": {"scale": "tanh"}}}},
        {"in_shape": [2], "params": {"transformer": {"circular_rq_spline": {"bins": 3}}}},
        {"in_shape": [3], "params": {"transformer": {"sos": {"polynomials": 2}}}},
        {"in_shape": [2], "params": {"transformer": {"bernstein": {"degree": 4}}}},
        {"in_shape": [2], "params": {"transformer": {"umnn": {"hidden": [4], "embedding": 2}}}},
        {"in_shape": [2], "params": {"transformer": {"ddsf": {"units": 2}}}},
    ],
)
class Elementwise(Bijector):
    """A transformer with its own learned parameters per entry (no conditioner): each
    coordinate gets an independent monotone map (e.g. marginal spline warping before a
    coupling stack, or circular splines on each angle).

    The parameters start at zero, so the node starts as the identity. A context, if
    the flow has one, is ignored.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 transformer: Any = "affine"):
        super().__init__(tuple(in_shape), context_shape)
        self.transformer: Transformer = build_transformer(transformer, tuple(in_shape))
        self.theta = nn.Parameter(torch.zeros(*in_shape, transformer_count(transformer)))
        if not self.transformer.analytic_inverse:
            self.analytic = "forward"  # type: ignore[misc]
            self.tolerance = self.transformer.tolerance  # type: ignore[misc]

    @classmethod
    def out_shape(cls, in_shape, transformer="affine", **_):
        transformer_count(transformer)
        return tuple(in_shape)

    def _theta(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta.to(x.dtype).expand(x.shape[0], *self.theta.shape)

    def forward(self, x, context=None):
        y, ld = self.transformer(x, self._theta(x))
        return y, sum_except_batch(ld)

    def inverse(self, y, context=None):
        x, ld = self.transformer.inverse(y, self._theta(y))
        return x, sum_except_batch(ld)
