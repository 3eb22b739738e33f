"""train.memory: invertible and checkpoint give the plain gradients, keeping less."""

from __future__ import annotations

import pytest
import torch

from flowspec.api import build_flow
from flowspec.memory import fallbacks, forward_plan
from flowspec.spec import load_spec

GLOW = """
model:
  input: [2, 8, 8]
  prior: diag_gaussian
  flow:
    - squeeze
    - repeat: 3
      body: [actnorm, {inv_conv1x1: {lu: true}}, {affine_coupling: {mask: channel,
             scale: sigmoid, net: {glow_cnn: {width: 8}}}}]
    - factor_out: {prior: conditional_gaussian}
    - squeeze
    - repeat: 2
      body: [actnorm, {inv_conv1x1: {lu: false}}, {additive_coupling: {mask: channel,
             net: {glow_cnn: {width: 8}}}}]
"""
REALNVP = """
model:
  input: [4]
  context: {shape: [2]}
  flow:
    - repeat: 4
      as: i
      body:
        - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [16]}}}
        - {permutation: {seed: "${i}"}}
"""
DROPOUT = """
model:
  input: [2, 4, 4]
  flow:
    - repeat: 2
      as: i
      body:
        - actnorm
        - coupling: {mask: checkerboard, parity: "${i}", transformer: affine,
                     net: {attention: {blocks: 1, width: 8, heads: 2, dropout: 0.3}}}
"""


def _grads(text: str, mode: str, x: torch.Tensor, ctx=None):
    torch.manual_seed(0)
    flow = build_flow(load_spec(text)).train()
    flow.memory = mode
    with torch.no_grad():
        flow.log_prob(x + 1, ctx)  # actnorm's data-dependent init, on another batch
        for p in flow.parameters():  # no zero-initialised layer: every gradient is generic
            p.add_(0.05 * torch.randn_like(p))
    flow.zero_grad()
    loss = -flow.log_prob(x, ctx).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in flow.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("text,shape", [(GLOW, (2, 8, 8)), (REALNVP, (4,)),
                                        (DROPOUT, (2, 4, 4))],
                         ids=["glow", "realnvp", "dropout"])
@pytest.mark.parametrize("mode", ["invertible", "checkpoint"])
def test_memory_modes_give_the_plain_gradients(text, shape, mode):
    torch.manual_seed(1)
    x = torch.randn(16, *shape)
    ctx = torch.randn(16, 2) if "context" in text else None
    loss0, g0 = _grads(text, "none", x, ctx)
    loss1, g1 = _grads(text, mode, x, ctx)
    assert torch.allclose(loss0, loss1, rtol=1e-6, atol=0)
    assert g0.keys() == g1.keys() and g0
    for name, g in g0.items():
        rel = (g1[name] - g).norm() / g.norm().clamp_min(1e-12)
        assert rel <= 1e-4, (name, float(rel))


def test_invertible_chains_span_the_levels_and_name_fallbacks():
    flow = build_flow(load_spec(GLOW)).train()
    items, _ = forward_plan(flow)
    # level 1: squeeze + 3 steps in one chain; split; level 2: squeeze + 2 steps
    assert len(items) == 3
    bn = build_flow(load_spec("model:\n  input: [3]\n  flow: [batch_norm, planar]\n"))
    lines = fallbacks(bn.node_items())
    assert any("batch_norm" in ln and "keeps" in ln for ln in lines)
    assert any("planar" in ln and "checkpointed" in ln for ln in lines)
    # a net with dropout cannot be rebuilt by the inverse (a new mask): checkpointed, said
    lines = fallbacks(build_flow(load_spec(DROPOUT)).node_items())
    assert any("coupling" in ln and "dropout" in ln for ln in lines), lines
    # each node's own reason, not the last node's
    mixed = DROPOUT.replace("  flow:\n", "  flow:\n    - residual: {net: {lipschitz_cnn: "
                                          "{width: 4, layers: 1}}}\n")
    lines = fallbacks(build_flow(load_spec(mixed)).node_items())
    (residual,) = [ln for ln in lines if "residual" in ln]
    assert "inverse is numerical" in residual and "dropout" not in residual, lines
    assert any("coupling" in ln and "dropout" in ln for ln in lines), lines


def test_invertible_keeps_no_activations_inside_a_chain():
    """Saved tensors of one backward graph: invertible keeps only the chain's ends."""
    def saved_bytes(mode: str) -> int:
        torch.manual_seed(0)
        flow = build_flow(load_spec(REALNVP.replace("repeat: 4", "repeat: 12"))).train()
        flow.memory = mode
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            flow.log_prob(torch.randn(256, 4), torch.randn(256, 2)).sum()
        return total

    plain, inv = saved_bytes("none"), saved_bytes("invertible")
    assert inv < plain / 10, (plain, inv)
