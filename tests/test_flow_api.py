"""The sampling API: ``n`` positional, ``temperature=`` and ``context=`` by keyword, the same
in every method; the old positional orders still work, with a DeprecationWarning."""

from __future__ import annotations

import pytest
import torch

import flowspec

COND = """\
name: cond
model:
  input: [2]
  context: {classes: 3}
  prior: class_conditional_gaussian
  flow:
    - affine_coupling: {mask: half, net: {mlp: {hidden: [8]}}}
"""


@pytest.fixture
def flow():
    return flowspec.load(COND)


def test_keywords_agree_across_methods(flow):
    labels = torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    a = flow.sample(3, temperature=0.5, context=labels)
    torch.manual_seed(0)
    b, log_q = flow.sample_and_log_prob(3, temperature=0.5, context=labels)
    torch.manual_seed(0)
    c, _ = flow.sample_with_latents(3, temperature=0.5, context=labels)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.allclose(log_q, flow.log_prob(b, labels), atol=1e-5)


def test_old_positional_orders_still_work_with_a_warning(flow):
    labels = torch.tensor([2, 2])
    torch.manual_seed(1)
    new = flow.sample(2, temperature=0.0, context=labels)
    with pytest.warns(DeprecationWarning, match="by keyword"):
        old = flow.sample(2, 0.0, labels)  # was sample(n, temperature, context)
    assert torch.equal(new, old)
    torch.manual_seed(1)
    new_x, new_lq = flow.sample_and_log_prob(2, temperature=0.0, context=labels)
    with pytest.warns(DeprecationWarning):
        old_x, old_lq = flow.sample_and_log_prob(2, labels, 0.0)  # was (n, context, temperature)
    assert torch.equal(new_x, old_x) and torch.equal(new_lq, old_lq)
    with pytest.raises(TypeError, match="by keyword"):
        flow.sample(2, 0.0, labels, 5)


def test_several_latents_come_as_a_tuple():
    f = flowspec.load("""\
name: two
model:
  input: [4]
  flow:
    - affine_coupling: {mask: half}
    - factor_out
    - affine_coupling: {mask: half}
""")
    z, logdet = f(torch.randn(5, 4))
    assert isinstance(z, tuple) and [t.shape for t in z] == [(5, 2), (5, 2)]
    assert f.latent_names == ["flow.1.factor_out", "z"]  # declaration order
    assert f.flatten_latents(z).shape == (5, 4) and logdet.shape == (5,)


def test_load_takes_long_yaml_text_without_asking_the_filesystem():
    from pathlib import Path

    spec = Path(__file__).parent.parent / "specs" / "realnvp_moons.yaml"
    text = spec.read_text() + "\n" + "#" * 5000 + "\n"
    assert flowspec.load(text).num_dims == 2
