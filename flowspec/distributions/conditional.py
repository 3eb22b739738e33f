"""Gaussian priors whose mean and scale are predicted: Glow's split and class priors."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from flowspec.distributions.base import PRIORS, Prior
from flowspec.errors import FlowspecError
from flowspec.nets.base import build_net
from flowspec.nets.glow_cnn import ZeroConv2d, ZeroLinear
from flowspec.registry import params_schema, ref

_LOG_2PI = math.log(2 * math.pi)
#: ceiling of a split prior's predicted log-scale (std <= e^5 ~ 148), see ConditionalGaussian
MAX_LOG_SCALE = 5.0


def _gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor):
    eps = (z - mean) * torch.exp(-log_scale)
    return (-0.5 * (eps * eps + _LOG_2PI) - log_scale).reshape(z.shape[0], -1).sum(1)


def _gaussian_sample(mean: torch.Tensor, log_scale: torch.Tensor, temperature: float):
    # randn of the shape, not randn_like: a channels_last ``mean`` must draw the same
    # numbers in the same places as a contiguous one (a seed means the same samples).
    eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
    return _gaussian_from_noise(mean, log_scale, eps, temperature)


def _gaussian_from_noise(mean: torch.Tensor, log_scale: torch.Tensor, eps: torch.Tensor,
                         temperature: float):
    return mean + torch.exp(log_scale) * eps * temperature


class _PredictedGaussian(Prior):
    """Shared part: a module maps an input to ``2 * prod(shape)`` numbers (mean, log-scale)."""

    noise = "normal"

    def _params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # contiguous: a channels_last predictor's output must not put the latent's
        # elementwise log-density on a mixed-layout (slow) path.
        mean, log_scale = h.contiguous().reshape(h.shape[0], 2, *self.shape).unbind(1)
        return mean, log_scale


@PRIORS.register(
    "conditional_gaussian",
    schema=params_schema(
        net={"anyOf": [ref("net"), {"type": "null"}], "default": None,
             "description": "maps cond to mean and log-scale (null: a zero-initialised "
             "conv3x3 for images, linear otherwise)"},
    ),
    category="conditional",
    examples=[
        {"shape": [4, 2, 2], "cond_shape": [4, 2, 2]},
        {"shape": [3], "cond_shape": [5]},
        {"shape": [2, 4, 4], "cond_shape": [6, 4, 4],
         "params": {"net": {"glow_cnn": {"width": 8}}}},
    ],
)
class ConditionalGaussian(_PredictedGaussian):
    """Diagonal Gaussian whose mean and log-scale are predicted from another port:
    Glow's split prior, which models a factored-out half given the kept half.

    The default predictor is zero-initialised (a conv3x3 with Glow's learned
    log-scale when ``cond`` and the latent are images of the same size, a linear
    map on the flattened tensors otherwise), so the prior starts as N(0, I).
    ``net`` replaces it; it then also sees the flow's context.

    The predicted log-scale is capped at ``MAX_LOG_SCALE`` = 5: it is linear in the
    conditioning half, so when sampling an out-of-range activation there gave
    ``exp(log-scale) = inf``. The factored-out half is unit-scale after actnorm; data
    never asks for a std above e^5, so densities are unchanged.
    """

    needs_cond = True

    def __init__(
        self,
        shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        cond_shape: tuple[int, ...] | None = None,
        *,
        net: Any = None,
    ):
        super().__init__(shape, context_shape, cond_shape)
        if cond_shape is None:
            raise FlowspecError("conditional_gaussian needs a 'cond' port to condition on",
                                hint="give the latent a cond: port (factor_out does this)")
        self.uses_context = net is not None
        out_shape = (2 * self.shape[0], *self.shape[1:])
        if net is not None:
            self.predictor: nn.Module = build_net(net, tuple(cond_shape), out_shape, context_shape)
        elif len(self.shape) == 3 and len(cond_shape) == 3 and cond_shape[1:] == self.shape[1:]:
            self.predictor = ZeroConv2d(cond_shape[0], out_shape[0])
        else:
            self.predictor = ZeroLinear(math.prod(cond_shape), 2 * math.prod(self.shape))
        self._flatten = net is None and isinstance(self.predictor, ZeroLinear)

    def _predict(self, cond: torch.Tensor | None, context: torch.Tensor | None):
        if cond is None:
            raise FlowspecError("conditional_gaussian was called without its cond tensor")
        if self._flatten:
            h = self.predictor(cond.reshape(cond.shape[0], -1))
        elif self.uses_context:
            h = self.predictor(cond, context)
        else:
            h = self.predictor(cond)
        mean, log_scale = self._params(h)
        return mean, log_scale.clamp_max(MAX_LOG_SCALE)

    def log_prob(self, z, context=None, cond=None):
        mean, log_scale = self._predict(cond, context)
        return _gaussian_log_prob(z, mean, log_scale)

    def sample(self, n, temperature=1.0, context=None, cond=None):
        mean, log_scale = self._predict(cond, context)
        return _gaussian_sample(mean, log_scale, temperature)

    def from_noise(self, eps, temperature=1.0, context=None, cond=None):
        mean, log_scale = self._predict(cond, context)
        return _gaussian_from_noise(mean, log_scale, eps, temperature)


@PRIORS.register(
    "class_conditional_gaussian",
    schema=params_schema(),
    category="conditional",
    examples=[
        {"shape": [4, 2, 2], "context_shape": [3]},
        {"shape": [5], "context_shape": [2, 2]},
    ],
)
class ClassConditionalGaussian(_PredictedGaussian):
    """Diagonal Gaussian with a learned mean and log-scale per class: Glow's
    class-conditional top prior, so samples can be drawn for a chosen label.

    A zero-initialised linear map (with Glow's learned log-scale) from the
    context gives the mean and log-scale; its bias is the class-independent part.
    With a one-hot context each class has its own mean and scale; a float
    tensor context is used as is.
    """

    needs_context = True

    def __init__(
        self,
        shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        cond_shape: tuple[int, ...] | None = None,
    ):
        super().__init__(shape, context_shape, cond_shape)
        if context_shape is None:
            raise FlowspecError("class_conditional_gaussian reads the flow's context",
                                hint="declare model.context, e.g. context: {classes: 10}")
        self.predictor = ZeroLinear(math.prod(context_shape), 2 * math.prod(self.shape))

    def _predict(self, context: torch.Tensor | None):
        if context is None:
            raise FlowspecError("class_conditional_gaussian needs a context (class labels)",
                                hint="pass context= to log_prob/sample")
        return self._params(self.predictor(context.reshape(context.shape[0], -1)))

    def log_prob(self, z, context=None, cond=None):
        mean, log_scale = self._predict(context)
        return _gaussian_log_prob(z, mean, log_scale)

    def sample(self, n, temperature=1.0, context=None, cond=None):
        if context is not None and context.shape[0] != n:
            raise FlowspecError(f"asked for {n} samples with a context of batch {context.shape[0]}")
        mean, log_scale = self._predict(context)
        return _gaussian_sample(mean, log_scale, temperature)

    def from_noise(self, eps, temperature=1.0, context=None, cond=None):
        mean, log_scale = self._predict(context)
        return _gaussian_from_noise(mean, log_scale, eps, temperature)
