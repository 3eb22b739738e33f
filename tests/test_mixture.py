"""The gaussian_mixture prior: exact density, stable far out, temperature, context."""

from __future__ import annotations

import pytest
import torch

import flowspec
from flowspec.check import jitter_parameters
from flowspec.distributions import PRIORS
from flowspec.errors import FlowspecError

D = torch.distributions


def _prior(shape, components=3, context_shape=None, **params):
    torch.manual_seed(0)
    prior = PRIORS.build({"gaussian_mixture": {"components": components, **params}}, shape,
                         context_shape=context_shape).double()
    jitter_parameters(prior, amount=0.5)
    return prior


def test_log_prob_matches_torch_mixture():
    prior = _prior((2, 3), components=4)
    z = 2 * torch.randn(9, 2, 3, dtype=torch.float64)
    ref = D.MixtureSameFamily(
        D.Categorical(logits=prior.logits),
        D.Independent(D.Normal(prior.means, torch.exp(prior.log_scales)), 1))
    assert torch.allclose(prior.log_prob(z), ref.log_prob(z.reshape(9, 6)).detach(), atol=1e-10)


def test_density_is_normalised_and_stable_far_away():
    prior = _prior((1,), components=3)
    t = torch.linspace(-40, 40, 40001, dtype=torch.float64)
    dens = torch.exp(prior.log_prob(t[:, None])).detach()
    assert float(torch.trapezoid(dens, t)) == pytest.approx(1.0, abs=1e-8)
    far = prior.log_prob(torch.full((2, 1), 1e4, dtype=torch.float64))
    assert torch.isfinite(far).all() and (far < -1e6).all()


def test_temperature_scales_each_component_spread():
    prior = _prior((3,), components=2)
    torch.manual_seed(5)
    z1 = prior.sample(200, 1.0)
    torch.manual_seed(5)
    zh = prior.sample(200, 0.5)
    torch.manual_seed(5)
    z0 = prior.sample(200, 0.0)  # the chosen components' means
    assert torch.allclose(zh - z0, 0.5 * (z1 - z0), atol=1e-12)
    means = prior.means.detach()
    assert all(any(torch.allclose(row, m) for m in means) for row in z0)


def test_component_frequencies_follow_the_weights():
    prior = _prior((2,), components=2)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 2.0]))
        prior.means.copy_(torch.tensor([[-50.0, 0.0], [50.0, 0.0]]))
    torch.manual_seed(0)
    z = prior.sample(20000)
    share = float((z[:, 0] > 0).double().mean())
    assert share == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=0.015)


def test_context_moves_the_mixture_and_is_required():
    prior = _prior((2,), components=2, context_shape=(3,),
                   net={"mlp": {"hidden": [8], "zero_init": False}})
    z = torch.randn(5, 2, dtype=torch.float64)
    c = torch.randn(5, 3, dtype=torch.float64)
    assert not torch.allclose(prior.log_prob(z, c), prior.log_prob(z, c + 1))
    assert prior.sample(5, context=c).shape == (5, 2)
    with pytest.raises(FlowspecError, match="context"):
        prior.log_prob(z)
    with pytest.raises(FlowspecError, match="has none"):
        PRIORS.build({"gaussian_mixture": {"net": "mlp"}}, (2,))


def test_a_flow_with_a_mixture_prior_fits_a_mixture():
    """Three well-separated clusters: a mixture prior under one MAF layer gets within
    0.15 nats of the data's own density in a few hundred steps."""
    torch.manual_seed(0)
    centers = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    x = centers[torch.randint(0, 3, (3000,))] + 0.5 * torch.randn(3000, 2)
    truth = D.MixtureSameFamily(D.Categorical(torch.ones(3)),
                                D.Independent(D.Normal(centers, 0.5 * torch.ones(3, 2)), 1))
    flow = flowspec.load({"model": {"input": [2], "flow": [{"maf": {"hidden": [16]}}],
                                    "prior": {"gaussian_mixture": {"components": 3}}}}).train()
    opt = torch.optim.Adam(flow.parameters(), lr=3e-2)
    for _ in range(200):
        batch = x[torch.randint(0, 3000, (128,))]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        gap = float(-flow.log_prob(x).mean() + truth.log_prob(x).mean())
    assert gap < 0.15
