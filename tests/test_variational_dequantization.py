"""Flow++ variational dequantization: the reported number is a bound, and it trains.

On a 2-D discrete toy (4 levels per axis) the model's exact discrete likelihood
``P(x) = ∫_bin p`` is computable by quadrature, so the variational bound
``E_q[-log p(x + u) + log q(u | x)]`` can be checked against it cell by cell.
"""

from __future__ import annotations

import math

import pytest
import torch

import flowspec
from flowspec.errors import SpecError

LEVELS = 4
SPEC = """
flowspec: 1
name: vd_toy
data:
  dataset: mnist
  preprocess: [{dequantize: variational}, {n_bits: 2}]
model:
  input: [2]
  dequantize:
    variational:
      flow:
        - coupling: {net: {mlp: {hidden: [32]}}, transformer: {affine: {scale: tanh}}}
        - coupling: {parity: 1, net: {mlp: {hidden: [32]}}, transformer: {affine: {scale: tanh}}}
  flow:
    - affine: {scale: 4.0, shift: -2.0}
    - repeat: 2
      as: i
      body:
        - coupling: {parity: "${i % 2}", net: {mlp: {hidden: [32]}},
                     transformer: {rq_spline: {bins: 8, bound: 3.0}}}
"""


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed distribution on the 4 x 4 grid: (cells [16, 2] as ints, probabilities)."""
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(2.0 * torch.randn(LEVELS * LEVELS, generator=g), 0)
    cells = torch.cartesian_prod(torch.arange(LEVELS), torch.arange(LEVELS)).float()
    return cells, probs


def _centres(cells: torch.Tensor) -> torch.Tensor:
    return (cells + 0.5) / LEVELS


@torch.no_grad()
def _exact_nll(flow, cells: torch.Tensor, per_axis: int = 40) -> torch.Tensor:
    """``-log P(x)`` in discrete nats: midpoint quadrature of the model's density over
    each bin (the dequantizer bypassed: the core flow's density of continuous points)."""
    t = (torch.arange(per_axis) + 0.5) / per_axis
    offsets = torch.cartesian_prod(t, t)  # [m, 2] inside the unit bin
    out = []
    for c in cells:
        y = (c + offsets) / LEVELS
        ctx = None
        vals, logdet = flow._forward_walk(y, ctx, None)
        logp = flow._latent_log_prob(vals, ctx) + logdet  # density on the [0, 1] scale
        # P(x) = ∫_bin p(y) dy, bin volume LEVELS^-2
        out.append(-(torch.logsumexp(logp, 0) - math.log(per_axis ** 2)
                     - 2 * math.log(LEVELS)))
    return torch.stack(out)


@torch.no_grad()
def _bound(flow, cells: torch.Tensor, draws: int = 400) -> torch.Tensor:
    """The reported bound per cell in discrete nats, averaged over ``draws`` of u."""
    y = _centres(cells).repeat_interleave(draws, 0)
    nll = -flow.log_prob(y).reshape(len(cells), draws).mean(1)
    return nll + 2 * math.log(LEVELS)  # + D·log L, as flowspec.metrics.bits_per_dim


@torch.no_grad()
def _uniform_bound(flow, cells: torch.Tensor, per_axis: int = 40) -> torch.Tensor:
    """``E_{u ~ U}[-log p(x + u)]`` + D·log L: uniform dequantization's bound."""
    t = (torch.arange(per_axis) + 0.5) / per_axis
    offsets = torch.cartesian_prod(t, t)
    out = []
    for c in cells:
        vals, logdet = flow._forward_walk((c + offsets) / LEVELS, None, None)
        out.append(-(flow._latent_log_prob(vals, None) + logdet).mean())
    return torch.stack(out) + 2 * math.log(LEVELS)


def test_bound_is_above_the_exact_nll_and_training_tightens_it():
    torch.manual_seed(0)
    flow = flowspec.load(SPEC)
    assert flow.dequantizer is not None and flow.dequantizer.levels == LEVELS
    cells, probs = _toy()
    entropy = float(-(probs * probs.log()).sum())

    def expected(values: torch.Tensor) -> float:
        return float((probs * values).sum())

    before = expected(_bound(flow, cells))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        idx = torch.multinomial(probs, 256, replacement=True)
        loss = -flow.log_prob(_centres(cells[idx])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    bound, exact = _bound(flow, cells), _exact_nll(flow, cells)
    # per cell: E_q[-log p(x+u) + log q(u|x)] = -log P(x) + KL(q || p(u | x)) >= -log P(x)
    assert torch.all(bound >= exact - 0.02), (bound - exact)
    after = expected(bound)
    assert expected(exact) >= entropy - 1e-3  # cross-entropy >= entropy
    assert after < before - 0.5, (before, after)
    assert after - entropy < 0.25, (after, entropy)
    # q learned something: tighter than uniform noise under the same model
    assert after < expected(_uniform_bound(flow, cells)), after


def test_spec_refuses_one_side_without_the_other():
    head, rest = SPEC.split("  dequantize:\n", 1)
    without_model_key = head + rest[rest.index("  flow:\n"):]
    with pytest.raises(SpecError, match="no variational dequantizer"):
        flowspec.load(without_model_key)
    uniform_data = SPEC.replace("{dequantize: variational}", "{dequantize: uniform}")
    with pytest.raises(SpecError, match="bin centres"):
        flowspec.load(uniform_data)
