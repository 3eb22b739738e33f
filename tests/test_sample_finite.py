"""Non-finite samples are counted per example and traced to the node that produced them."""

from __future__ import annotations

import torch

import flowspec
from flowspec.finite import check_samples, count_nonfinite, nonfinite_rows
from flowspec.spec import load_spec


def test_counts_per_example_over_tensors_and_tuples():
    x = torch.zeros(5, 2, 3)
    x[1, 0, 2] = float("nan")
    x[3, 1, 1] = float("inf")
    assert nonfinite_rows(x).tolist() == [False, True, False, True, False]
    y = torch.zeros(5, 4)
    y[4, 0] = -float("inf")
    assert count_nonfinite((x, y)) == 3
    assert count_nonfinite(torch.arange(6).reshape(3, 2)) == 0  # integers are finite


def test_check_samples_names_the_node_where_samples_overflow():
    spec = load_spec("""
model:
  input: [2]
  flow:
    - actnorm
    - affine_coupling: {net: {mlp: {hidden: [4]}}}
""")
    flow = flowspec.api.build_flow(spec).eval()
    actnorm = dict(flow.node_items())["flow.0.actnorm"]
    with torch.no_grad():
        actnorm.initialized.fill_(True)
        actnorm.log_scale[0] = -88.5  # inverse multiplies by exp(88.5) ~ 2.7e38
    torch.manual_seed(0)
    x, z = flow.sample_with_latents(400)
    check = check_samples(flow, z)
    assert check.n == 400
    assert check.nonfinite == count_nonfinite(x) > 0  # only samples with |z_0| > ~1.3
    assert check.nonfinite < 400
    assert check.first_nodes == {"flow.0.actnorm": check.nonfinite}
    assert check.indices == nonfinite_rows(x).nonzero().flatten().tolist()
    assert "flow.0.actnorm" in check.summary() and flow.watch is None


def _last_linear(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def test_sigmoid_coupling_inverse_expands_at_most_1000x():
    """1/sigmoid(h + 2) grows like exp(-h): the floored scale bounds each inverse."""
    from flowspec.bijectors.coupling import AffineCoupling

    node = AffineCoupling((4,), scale="sigmoid", net={"mlp": {"hidden": [8]}})
    last = _last_linear(node.net)
    with torch.no_grad():
        last.bias[:2] = -1e4  # raw pre-sigmoid scale of both transformed entries
        last.bias[2:] = 0.5  # shift
    y = torch.ones(3, 4)
    x, ld = node.inverse(y)
    assert torch.isfinite(x).all() and x[:, 2:].abs().max() <= 1000 + 0.5 + 1e-3
    assert torch.allclose(ld, torch.full((3,), 2 * 3 * 2.302585093), rtol=1e-6)
    y2, ld2 = node(x)
    assert torch.allclose(y2, y) and torch.allclose(ld2, -ld)


def test_split_prior_std_is_capped_when_its_condition_is_out_of_range():
    from flowspec.distributions.conditional import MAX_LOG_SCALE, ConditionalGaussian

    prior = ConditionalGaussian((2, 4, 4), cond_shape=(2, 4, 4))
    with torch.no_grad():
        prior.predictor.conv.weight.fill_(1.0)
    cond = torch.full((5, 2, 4, 4), 1e6)  # an activation far outside the data's range
    z = prior.sample(5, 1.0, cond=cond)
    assert torch.isfinite(z).all()
    with torch.no_grad():
        _, log_scale = prior._predict(cond, None)
    assert float(log_scale.max()) == MAX_LOG_SCALE
    assert torch.isfinite(prior.log_prob(z, cond=cond)).all()


def test_glow_with_wild_conditioners_samples_finite_values():
    """The failure the issue found, made deterministic: conditioners far from their
    zero init (as after a short, fast training) used to give 255 of 256 non-finite
    samples at T = 0.7 (exp-of-linear feedback through the sigmoid inverse and the split
    prior's scale); the floor and the cap keep every sample finite."""
    from flowspec.nets.glow_cnn import ZeroConv2d

    step = ("[actnorm, {inv_conv1x1: {lu: true}}, {affine_coupling: {mask: channel, "
            "scale: sigmoid, net: {glow_cnn: {width: 8}}}}]")
    spec = load_spec(f"""
model:
  input: [1, 8, 8]
  prior: diag_gaussian
  flow:
    - squeeze
    - {{repeat: 2, body: {step}}}
    - factor_out: {{prior: conditional_gaussian}}
    - squeeze
    - {{repeat: 2, body: {step}}}
""")
    torch.manual_seed(0)
    flow = flowspec.api.build_flow(spec)
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, ZeroConv2d):
                m.conv.weight.normal_(0, 1.0)
                m.conv.bias.normal_(0, 1.0)
        flow.train()
        flow.log_prob(torch.rand(64, 1, 8, 8))  # actnorm's data-dependent init
        flow.eval()
        for temperature in (0.7, 1.0, 2.0):
            torch.manual_seed(1)
            assert count_nonfinite(flow.sample(256, temperature=temperature)) == 0, temperature
