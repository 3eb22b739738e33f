"""The sampling API: ``n`` positional, ``temperature=`` and ``context=`` by keyword, the same
in every method."""

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


def test_sampling_extras_are_keyword_only(flow):
    with pytest.raises(TypeError):
        flow.sample(2, 0.0)
    with pytest.raises(TypeError):
        flow.sample_and_log_prob(2, None, 1.0)


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
