"""What the generic contract test cannot see about the flow families: that the named
pairs are the generic conditioners, the circular spline's periodicity, the wavelet
layouts, quadrature rules, the torus toy's entropy and the import direction."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.bijectors.monotone import _Quadrature
from flowspec.bijectors.transformers import TRANSFORMERS
from flowspec.check import jitter_parameters


def _build(spec, shape, seed=0):
    torch.manual_seed(seed)
    node = NODES.build(spec, shape).double()
    return node


@pytest.mark.parametrize("named,generic", [
    ({"affine_coupling": {"net": {"mlp": {"hidden": [8]}}}},
     {"coupling": {"net": {"mlp": {"hidden": [8]}}, "transformer": {"affine": {"scale": "tanh"}}}}),
    ({"rq_spline_coupling": {"bins": 4, "net": {"mlp": {"hidden": [8]}}}},
     {"coupling": {"net": {"mlp": {"hidden": [8]}},
                   "transformer": {"rq_spline": {"bins": 4}}}}),
    ({"maf": {"hidden": [8]}}, {"autoregressive": {"hidden": [8]}}),
    ({"iaf": {"hidden": [8]}}, {"autoregressive": {"hidden": [8], "fast": "inverse"}}),
    ({"rq_spline_autoregressive": {"hidden": [8], "bins": 5}},
     {"autoregressive": {"hidden": [8], "transformer": {"rq_spline": {"bins": 5}}}}),
])
def test_named_nodes_are_the_generic_conditioners(named, generic):
    a, b = _build(named, (4,)), _build(generic, (4,))
    jitter_parameters(a, amount=0.5)
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 4, dtype=torch.float64)
    for f, g in ((a, b), (a.inverse, b.inverse)):
        (ya, la), (yb, lb) = f(x), g(x)
        assert torch.equal(ya, yb) and torch.equal(la, lb)


def test_sos_can_contract_and_stays_finite_far_from_its_bound():
    """The slope floor is 1e-3, not 1 (a flow that cannot contract cannot map wide data
    onto the prior), and soft-clipped coefficients keep huge conditioner outputs finite."""
    sos = TRANSFORMERS.get("sos").obj((), polynomials=1, degree=2, bound=2.0)
    theta = torch.zeros(5, 4, dtype=torch.float64)
    theta[:, 1] = -1 / (1 - 1 / sos.max_coefficient)  # clipped to -1: 1 + p_0 = 0
    x = torch.linspace(-3, 3, 5, dtype=torch.float64)
    _, ld = sos(x, theta)
    assert torch.allclose(ld, torch.full_like(ld, math.log(sos.min_slope)))
    wide = TRANSFORMERS.get("sos").obj((), polynomials=3, degree=4, bound=4.0)
    y, ld = wide(torch.tensor([-1e4, 0.5, 1e4]), torch.randn(3, 16) * 1e6)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert float(ld.max()) <= math.log((1 + 5 * (wide.max_coefficient + 0.1)) ** 2)


def test_bernstein_high_degree_is_finite_identity_at_zero_and_exact():
    """The basis is in log space: degree 300 (C(300, 150) overflows float64's exp range
    in float32) keeps the identity at zero and log-dets equal to autograd's."""
    t = TRANSFORMERS.get("bernstein").obj((), degree=300, bound=4.0)
    x = torch.linspace(-5, 5, 40, dtype=torch.float64)  # not on the bounds ±4
    y, ld = t(x.float(), torch.zeros(40, 300))
    assert torch.allclose(y.double(), x, atol=1e-4) and ld.abs().max() < 1e-4
    xr = x.clone().requires_grad_(True)
    theta = torch.randn(40, 300, dtype=torch.float64, requires_grad=True)
    y, ld = t(xr, theta * 3)
    (grad,) = torch.autograd.grad(y.sum(), xr)
    assert torch.allclose(torch.log(grad), ld, atol=1e-9)
    assert float(ld.min()) >= math.log(1e-3) - 1e-9
    ends = torch.tensor([-4.0, 4.0], dtype=torch.float64, requires_grad=True)
    y, ld = t(ends, theta[:2])
    grads = torch.autograd.grad((y + ld).sum(), [ends, theta])
    assert all(torch.isfinite(g).all() for g in grads)  # no 0 * log 0 on the bounds


def test_circular_spline_is_periodic_with_matching_end_slopes():
    t = TRANSFORMERS.get("circular_rq_spline").obj((), bins=5)
    theta = torch.randn(7, 15, dtype=torch.float64)
    x = torch.rand(7, dtype=torch.float64) * 2 * math.pi - math.pi
    y, ld = t(x, theta)
    for k in (-2, 1, 3):
        yk, ldk = t(x + 2 * math.pi * k, theta)
        assert torch.allclose(yk, y + 2 * math.pi * k, atol=1e-12)
        assert torch.allclose(ldk, ld, atol=1e-12)
    ends = torch.tensor([-math.pi, math.pi - 1e-12], dtype=torch.float64)
    y_end, ld_end = t(ends, theta[:2].clone().copy_(theta[:1].expand(2, -1)))
    assert torch.allclose(ld_end[0], ld_end[1], atol=1e-9)  # the density is continuous
    assert torch.allclose(y_end, ends, atol=1e-9)  # the seam stays put


def test_haar_bands_and_irevnet_layout():
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    haar = NODES.build("haar", (1, 4, 4))
    y, ld = haar(x)
    block = x[0, 0, :2, :2].reshape(-1)  # (0,0), (0,1), (1,0), (1,1)
    assert y[0, 0, 0, 0] == block.sum() / 2  # low-pass: scaled average
    assert y[0, 1, 0, 0] == (block[0] - block[1] + block[2] - block[3]) / 2
    assert torch.equal(ld, torch.zeros(1, dtype=ld.dtype))
    c = torch.ones(1, 2, 4, 4, dtype=torch.float64) * 3.0
    yc, _ = NODES.build("haar", (2, 4, 4))(c)
    assert torch.allclose(yc[:, :2], torch.full_like(yc[:, :2], 6.0)) and yc[:, 2:].abs().max() == 0
    # i-RevNet: channel (2i + j) C + c holds pixel (2y + i, 2x + j) of channel c
    img = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    out, _ = NODES.build("irevnet_downsample", (3, 4, 6))(img)
    for i in range(2):
        for j in range(2):
            assert torch.equal(out[:, (2 * i + j) * 3:(2 * i + j + 1) * 3], img[:, :, i::2, j::2])


@pytest.mark.parametrize("rule", ["gauss", "clenshaw_curtis"])
def test_quadrature_rules_integrate_polynomials(rule):
    nodes, weights = getattr(_Quadrature, rule)(9)
    for k in range(8):
        exact = (1 - (-1) ** (k + 1)) / (k + 1)
        assert abs(float((weights * nodes ** k).sum()) - exact) < 1e-12


def test_torus_toy_entropy_and_support():
    from flowspec.data.toys import (
        ENTROPY,
        TORUS_MEANS,
        TORUS_NOISE,
        TORUS_SHIFT,
        TORUS_STD,
        torus,
    )

    x = torus(40_000, torch.Generator().manual_seed(3))
    assert x.shape == (40_000, 2) and (x >= -math.pi).all() and (x < math.pi).all()

    def wrapped(t, means, std):
        k = torch.arange(-6, 7, dtype=torch.float64)
        z = (t[:, None, None] - torch.tensor(means, dtype=torch.float64)[None, :, None]
             + 2 * math.pi * k) / std
        return torch.exp(-0.5 * z * z).sum((1, 2)) / (std * math.sqrt(2 * math.pi) * len(means))

    lp = (torch.log(wrapped(x[:, 0], TORUS_MEANS, TORUS_STD))
          + torch.log(wrapped(x[:, 1] - x[:, 0] - TORUS_SHIFT, (0.0,), TORUS_NOISE)))
    se = float(lp.std()) / math.sqrt(len(lp))
    assert abs(float(-lp.mean()) - ENTROPY["torus"]) < 4 * se


def test_uniform_prior_refuses_points_outside_its_box():
    from flowspec.distributions import PRIORS

    prior = PRIORS.build("uniform", (2,))
    lp = prior.log_prob(torch.tensor([[0.0, 3.0], [0.0, 3.2]]))
    assert lp[0] == pytest.approx(-2 * math.log(2 * math.pi)) and lp[1] == -math.inf


def test_numerical_transformer_makes_the_node_state_its_tolerance():
    node = NODES.build({"coupling": {"transformer": "umnn"}}, (2,))
    assert node.analytic == "forward" and node.tolerance > 0
    ar = NODES.build({"autoregressive": {"transformer": "dsf", "fast": "inverse"}}, (2,))
    assert ar.analytic == "inverse" and ar.tolerance > 0
    assert NODES.build({"coupling": {"transformer": "rq_spline"}}, (2,)).analytic == "both"


def test_nets_never_import_bijectors():
    code = ("import sys, flowspec.nets; "
            "print([m for m in sys.modules if m.startswith('flowspec.bijectors')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
