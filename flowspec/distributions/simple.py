"""Fixed and learned factorised priors."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowspec.distributions.base import PRIORS, Prior
from flowspec.registry import params_schema

_LOG_2PI = math.log(2 * math.pi)
#: shapes the generic prior contract test runs.
_EXAMPLES = [{"shape": [4]}, {"shape": [2, 3, 3]}]


def _flat_sum(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


@PRIORS.register("standard_normal", schema=params_schema(),
                  examples=_EXAMPLES)
class StandardNormal(Prior):
    """Isotropic unit Gaussian N(0, I): the default prior."""

    noise = "normal"

    def __init__(self, shape, context_shape=None, cond_shape=None):
        super().__init__(shape, context_shape, cond_shape)
        self.register_anchor()

    def log_prob(self, z, context=None, cond=None):
        return _flat_sum(-0.5 * (z * z + _LOG_2PI))

    def sample(self, n, temperature=1.0, context=None, cond=None):
        a = self._like()
        return self.from_noise(torch.randn(n, *self.shape, device=a.device, dtype=a.dtype),
                               temperature)

    def from_noise(self, eps, temperature=1.0, context=None, cond=None):
        return eps * temperature


@PRIORS.register("logistic", schema=params_schema(),
                  examples=_EXAMPLES)
class StandardLogistic(Prior):
    """Factorised standard logistic, NICE's prior (heavier tails than a Gaussian)."""

    noise = "logistic"

    def __init__(self, shape, context_shape=None, cond_shape=None):
        super().__init__(shape, context_shape, cond_shape)
        self.register_anchor()

    def log_prob(self, z, context=None, cond=None):
        return _flat_sum(-(nn.functional.softplus(z) + nn.functional.softplus(-z)))

    def sample(self, n, temperature=1.0, context=None, cond=None):
        a = self._like()
        u = torch.rand(n, *self.shape, device=a.device, dtype=a.dtype).clamp_(1e-6, 1 - 1e-6)
        return self.from_noise(torch.log(u) - torch.log1p(-u), temperature)

    def from_noise(self, eps, temperature=1.0, context=None, cond=None):
        return eps * temperature


@PRIORS.register("diag_gaussian", schema=params_schema(),
                  examples=_EXAMPLES)
class DiagGaussian(Prior):
    """Gaussian with a learned mean and log-scale per dimension (Glow's top prior)."""

    noise = "normal"

    def __init__(self, shape, context_shape=None, cond_shape=None):
        super().__init__(shape, context_shape, cond_shape)
        self.mean = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))

    def log_prob(self, z, context=None, cond=None):
        eps = (z - self.mean) * torch.exp(-self.log_scale)
        return _flat_sum(-0.5 * (eps * eps + _LOG_2PI) - self.log_scale)

    def sample(self, n, temperature=1.0, context=None, cond=None):
        eps = torch.randn(n, *self.shape, device=self.mean.device, dtype=self.mean.dtype)
        return self.from_noise(eps, temperature)

    def from_noise(self, eps, temperature=1.0, context=None, cond=None):
        return self.mean + torch.exp(self.log_scale) * eps * temperature
