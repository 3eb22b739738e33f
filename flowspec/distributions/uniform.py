"""The uniform prior on a box: the base density of flows on the torus (circular splines
map [-π, π)^D onto itself)."""

from __future__ import annotations

import math

import torch

from flowspec.distributions.base import PRIORS, Prior
from flowspec.registry import params_schema

#: points this far outside the box (relative to its width) still count as inside:
#: float rounding at the seam of a circular map.
_SLACK = 1e-5


@PRIORS.register(
    "uniform",
    schema=params_schema(
        low={"type": "number", "default": -math.pi, "description": "lower end of every side"},
        high={"type": "number", "default": math.pi, "description": "upper end of every side"},
    ),
    examples=[{"shape": [2]}, {"shape": [2, 3], "params": {"low": 0.0, "high": 1.0}}],
)
class Uniform(Prior):
    """Uniform on ``[low, high)^D`` (default ``[-π, π)``: the torus of angles).

    ``log p = -D log(high - low)`` inside; outside it is ``-inf``, so a flow that
    leaves the box shows up as an infinite loss instead of a wrong finite one.
    A temperature ``T`` draws from the box shrunk by ``T`` about its centre (still
    inside the support; ``T = 0`` gives the centre).
    """

    def __init__(self, shape, context_shape=None, cond_shape=None, *,
                 low: float = -math.pi, high: float = math.pi):
        super().__init__(shape, context_shape, cond_shape)
        if not high > low:
            raise ValueError(f"uniform prior needs high > low, got [{low}, {high}]")
        self.low, self.high = float(low), float(high)
        self.register_anchor()

    def log_prob(self, z, context=None, cond=None):
        slack = _SLACK * (self.high - self.low)
        flat = z.reshape(z.shape[0], -1)
        inside = ((flat >= self.low - slack) & (flat <= self.high + slack)).all(1)
        value = -flat.shape[1] * math.log(self.high - self.low)
        return torch.where(inside, flat.new_full((flat.shape[0],), value),
                           flat.new_full((flat.shape[0],), -math.inf))

    def sample(self, n, temperature=1.0, context=None, cond=None):
        a = self._like()
        u = torch.rand(n, *self.shape, device=a.device, dtype=a.dtype) - 0.5
        return 0.5 * (self.low + self.high) + (self.high - self.low) * temperature * u
