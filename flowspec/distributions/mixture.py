"""A learned Gaussian mixture prior, optionally predicted from the flow's context."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from flowspec.distributions.base import PRIORS, Prior
from flowspec.errors import FlowspecError
from flowspec.nets.base import build_net
from flowspec.registry import params_schema, ref

_LOG_2PI = math.log(2 * math.pi)
#: the context predictor used when ``net`` is null.
DEFAULT_NET: dict[str, Any] = {"mlp": {"hidden": [64]}}


@PRIORS.register(
    "gaussian_mixture",
    schema=params_schema(
        components={"type": "integer", "minimum": 1, "default": 8,
                    "description": "number of mixture components K"},
        net={"anyOf": [ref("net"), {"type": "null"}], "default": None,
             "description": "with a context: the net predicting offsets to the logits, "
             "means and log-scales from it (null: {mlp: {hidden: [64]}}, zero-initialised)"},
    ),
    examples=[
        {"shape": [4], "params": {"components": 3}},
        {"shape": [2], "context_shape": [3], "params": {"components": 2}},
        {"shape": [2, 2, 2], "context_shape": [2],
         "params": {"components": 2, "net": {"mlp": {"hidden": [4], "zero_init": False}}}},
        {"shape": [1], "params": {"components": 1}},
    ],
    location_scale=False,
)
class GaussianMixture(Prior):
    """Mixture of K diagonal Gaussians over the whole latent, with learned weights, means
    and scales: a multi-modal base density, so the flow need not tear one Gaussian apart.

    ``log p(z) = logsumexp_k [log pi_k + log N(z; mu_k, diag sigma_k^2)]`` (stable for
    far-away points). Means start at random N(0, I) draws, so the components differ;
    scales at 1, weights equal. When the flow has a context, a net maps it to offsets
    of all three (zero-initialised: the mixture starts context-free).

    Temperature T: the component is drawn with the learned weights, then each
    component's standard deviation is multiplied by T (T = 0 gives the component
    means). This is not a rescaling of the whole density, so the prior opts out of
    the generic location-scale temperature checks.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        cond_shape: tuple[int, ...] | None = None,
        *,
        components: int = 8,
        net: Any = None,
    ):
        super().__init__(shape, context_shape, cond_shape)
        k, d = int(components), math.prod(self.shape)
        self.k, self.d = k, d
        self.logits = nn.Parameter(torch.zeros(k))
        self.means = nn.Parameter(torch.randn(k, d))
        self.log_scales = nn.Parameter(torch.zeros(k, d))
        self.predictor: nn.Module | None = None
        if context_shape is not None:
            self.predictor = build_net(net if net is not None else DEFAULT_NET,
                                       tuple(context_shape), (k * (1 + 2 * d),))
        elif net is not None:
            raise FlowspecError("gaussian_mixture: 'net' predicts the mixture from the flow's "
                                "context, but the flow has none",
                                hint="declare model.context, or remove net")

    def _mixture(self, context: torch.Tensor | None, n: int):
        """``(log weights [B|1, K], means [B|1, K, D], log-scales [B|1, K, D])``."""
        logits, means, log_scales = self.logits[None], self.means[None], self.log_scales[None]
        if self.predictor is not None:
            if context is None:
                raise FlowspecError("gaussian_mixture reads the flow's context; none was given")
            if context.shape[0] != n:
                raise FlowspecError(f"asked for {n} latents with a context of batch "
                                    f"{context.shape[0]}")
            h = self.predictor(context.to(self.means.dtype), None)
            dl, dm, ds = h.split([self.k, self.k * self.d, self.k * self.d], 1)
            logits = logits + dl
            means = means + dm.reshape(-1, self.k, self.d)
            log_scales = log_scales + ds.reshape(-1, self.k, self.d)
        return torch.log_softmax(logits, -1), means, log_scales

    def log_prob(self, z, context=None, cond=None):
        log_w, means, log_scales = self._mixture(context, z.shape[0])
        flat = z.reshape(z.shape[0], 1, self.d)
        eps = (flat - means) * torch.exp(-log_scales)
        comp = (-0.5 * (eps * eps + _LOG_2PI) - log_scales).sum(-1)  # [B, K]
        return torch.logsumexp(log_w + comp, dim=-1)

    def sample(self, n, temperature=1.0, context=None, cond=None):
        log_w, means, log_scales = self._mixture(context, n)
        idx = torch.multinomial(torch.exp(log_w).expand(n, -1), 1)  # [n, 1]
        pick = idx[:, :, None].expand(n, 1, self.d)
        mu = means.expand(n, -1, -1).gather(1, pick)[:, 0]
        sigma = torch.exp(log_scales.expand(n, -1, -1).gather(1, pick)[:, 0])
        z = mu + sigma * torch.randn_like(mu) * temperature
        return z.reshape(n, *self.shape)
