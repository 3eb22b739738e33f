"""The monotone solver and the nodes built on it: planar, radial, bnaf.

Round trips are checked against each class's stated ``tolerance`` (absolute up
to |x| = 1, relative beyond) in float32 and float64, including points far out;
log-dets against autograd Jacobians; gradients of the solved directions against
finite differences (they come from the solver's implicit-function step).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from flowspec.bijectors import NODES
from flowspec.errors import ShapeError
from flowspec.numerics import RootNotBracketed, solve_monotone

DTYPES = [torch.float64, torch.float32]


def _make(name: str, dims: int, dtype=torch.float64, seed: int = 0, **params):
    torch.manual_seed(seed)
    entry = NODES.get(name)
    return entry.obj((dims,), **entry.with_defaults(params)).to(dtype)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1.0)).max())


def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    rows = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], xi)
        rows.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(rows)


def _points(dims: int, dtype) -> torch.Tensor:
    """Typical points, points far out (|x| ~ 1e3) and points near the origin."""
    torch.manual_seed(1)
    return torch.cat([torch.randn(64, dims) * 2, torch.randn(16, dims) * 1e3,
                      torch.randn(16, dims) * 1e-4]).to(dtype)


# -- the solver -------------------------------------------------------------------------


def _cubic(x):
    return x**3 + x + torch.tanh(3 * x), 3 * x**2 + 1 + 3 / torch.cosh(3 * x) ** 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("newton", [True, False])
def test_solver_finds_roots_far_from_the_first_bracket(dtype, newton):
    torch.manual_seed(0)
    target = torch.cat([torch.randn(200) * 50, torch.tensor([1e6, -1e6, 0.0])]).to(dtype)
    fn = _cubic if newton else (lambda x: (_cubic(x)[0], None))
    x = solve_monotone(fn, target)  # first bracket is target ± 1: far off for a cubic
    f, df = _cubic(x)
    eps = torch.finfo(dtype).eps
    assert float(((f - target).abs() / df).max()) < 8 * eps * float(x.abs().max())


def test_solver_agrees_between_newton_and_bisection_and_given_brackets():
    target = torch.linspace(-30, 30, 101, dtype=torch.float64)
    a = solve_monotone(_cubic, target)
    b = solve_monotone(lambda x: (_cubic(x)[0], None), target)
    c = solve_monotone(_cubic, target, lo=torch.full_like(target, 5.0),
                       hi=torch.full_like(target, 6.0))  # a wrong bracket is grown
    assert torch.allclose(a, b, atol=1e-13) and torch.allclose(a, c, atol=1e-13)


def test_solver_leaves_nan_targets_nan_and_solves_the_rest():
    target = torch.tensor([float("nan"), 2.0, float("inf"), -3.0], dtype=torch.float64)
    x = solve_monotone(_cubic, target)
    assert torch.isnan(x[0]) and torch.isnan(x[2])
    assert torch.allclose(_cubic(x[[1, 3]])[0], target[[1, 3]], atol=1e-12)


def test_solver_raises_when_the_target_is_outside_the_range():
    with pytest.raises(RootNotBracketed, match="outside the range"):
        solve_monotone(lambda x: (torch.tanh(x), 1 - torch.tanh(x) ** 2),
                       torch.tensor([0.5, 2.0], dtype=torch.float64), max_expand=20)


def test_solver_gradient_is_the_implicit_function_gradient():
    a = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.3, 4.0, -12.0], dtype=torch.float64, requires_grad=True)

    def solve(a_, t_):
        return solve_monotone(lambda x: (a_ * x + torch.sinh(x), a_ + torch.cosh(x)), t_)

    assert torch.autograd.gradcheck(solve, (a, target))
    with torch.no_grad():  # and nothing is recorded without gradients
        assert solve(a, target).grad_fn is None


# -- round trips and log-dets -------------------------------------------------------------

CASES = [
    ("planar", 2, {}),
    ("planar", 2, {"init_scale": 2.0}),
    ("planar", 6, {"init_scale": 0.7}),
    ("radial", 2, {"init_scale": 1.5}),
    ("radial", 5, {"init_scale": 0.5}),
    ("bnaf", 2, {"hidden": 8}),
    ("bnaf", 3, {"hidden": 4, "layers": 1, "residual": "normal"}),
    ("bnaf", 2, {"hidden": 4, "activation": "leaky_relu", "residual": None}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,dims,params", CASES)
def test_round_trips_within_the_stated_tolerance(name, dims, params, dtype):
    node = _make(name, dims, dtype, **params)
    tol = max(node.tolerance, 1e-12 if dtype == torch.float64 else 2e-6)
    x = _points(dims, dtype)
    with torch.no_grad():
        z, ld_fwd = node.forward(x)
        x_back, ld_inv = node.inverse(z)
        x_gen, ld_gen = node.inverse(x)  # and the other way round
        z_back, ld_back = node.forward(x_gen)
    assert _rel_err(x_back, x) <= tol
    # Latent -> data -> latent: rounding of the data is magnified by the forward map's
    # own Jacobian where it expands (a conditioning limit, not a solver one).
    magnify = 1.0 if dtype == torch.float64 else (1 + ld_back.exp())[:, None]
    err = (z_back - x).abs() / x.abs().clamp_min(1.0) / magnify
    assert float(err.max()) <= tol
    scale = 1e-9 if dtype == torch.float64 else 1e-3
    assert float((ld_fwd + ld_inv).abs().max()) < scale
    # (float32: only where z_back is well-determined, i.e. the forward map does not expand.)
    fine = ld_back < (50 if dtype == torch.float64 else 3)
    assert float((ld_gen + ld_back)[fine].abs().max()) < scale


@pytest.mark.parametrize("name,dims,params", CASES)
def test_logdets_match_autograd_jacobians_both_ways(name, dims, params):
    node = _make(name, dims, **params)
    x = _points(dims, torch.float64)[::8]
    for fn in (node.forward, node.inverse):
        expect = _jacobian_logdet(fn, x)
        assert torch.allclose(fn(x)[1], expect, atol=1e-9), fn.__name__


def test_analytic_directions_are_declared():
    assert NODES.get("planar").obj.analytic == "inverse"
    assert NODES.get("bnaf").obj.analytic == "forward"
    assert NODES.get("radial").obj.analytic == "both"  # the radius solves a quadratic
    assert NODES.get("planar").obj.tolerance > 0 and NODES.get("bnaf").obj.tolerance > 0


# -- planar ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_planar_inverts_at_the_edge_of_invertibility(dtype):
    """wᵀu → -∞ makes wᵀû → -1: the map flattens at wᵀz + b = 0 but stays invertible."""
    node = _make("planar", 2, dtype)
    with torch.no_grad():
        node.w.copy_(torch.tensor([3.0, -1.0]))
        node.u.copy_(torch.tensor([-30.0, 10.0]))
        node.b.fill_(0.3)
    assert 0 <= float(node.u_hat()[1].detach()) < 1e-12  # wᵀû + 1
    x = _points(2, dtype)
    with torch.no_grad():
        x_back = node.inverse(node.forward(x)[0])[0]
    assert _rel_err(x_back, x) <= node.tolerance


def test_planar_uhat_keeps_the_map_invertible():
    node = _make("planar", 3)
    for wu in (-50.0, -1.0, 0.0, 3.0):
        with torch.no_grad():
            node.u.copy_(node.w * wu / (node.w @ node.w))
        with torch.no_grad():
            u_hat, s = node.u_hat()
        assert float(node.w.detach() @ u_hat) == pytest.approx(float(s) - 1, abs=1e-12)
        assert float(s) > 0  # wᵀû = -1 + softplus(wᵀu) > -1


class _Inverse(torch.nn.Module):
    """The node's inverse as a module's forward, so functional_call can drive it."""

    def __init__(self, node):
        super().__init__()
        self.node = node

    def forward(self, y):
        return self.node.inverse(y)


@pytest.mark.parametrize("name,params", [("planar", {"init_scale": 1.0}), ("radial", {}),
                                         ("bnaf", {"hidden": 3})])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_gradients_match_finite_differences(name, params, direction):
    """Outputs and log-dets, w.r.t. inputs and parameters, in both directions."""
    node = _make(name, 2, **params)
    module = node if direction == "forward" else _Inverse(node)
    names = [n for n, _ in module.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for _, p in module.named_parameters())
    x = (torch.randn(5, 2, dtype=torch.float64) * 1.5).requires_grad_(True)

    def run(x_, *ps):
        return functional_call(module, dict(zip(names, ps)), (x_,))

    assert torch.autograd.gradcheck(run, (x, *values), atol=1e-6)


# -- shapes and failure modes -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["planar", "radial", "bnaf"])
def test_vector_nodes_reject_images_with_a_fix(name):
    cls = NODES.get(name).obj
    assert cls.out_shape((4,)) == (4,)
    with pytest.raises(ShapeError, match="flatten"):
        cls.out_shape((1, 4, 4))


def test_bnaf_jacobian_is_lower_triangular_with_positive_diagonal():
    node = _make("bnaf", 3, hidden=5)
    x = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: node(v[None])[0][0], x)
    assert torch.all(jac.triu(1) == 0) and torch.all(jac.diagonal() > 0)


def test_bnaf_without_residual_cannot_reach_outside_its_image():
    node = _make("bnaf", 2, hidden=4, residual=None)  # tanh network: bounded image
    with torch.no_grad():
        reach = node(torch.full((1, 2), 1e6, dtype=torch.float64))[0].abs().max()
        with pytest.raises(RootNotBracketed, match="residual: gated"):
            node.inverse(torch.full((4, 2), float(reach) * 10 + 10, dtype=torch.float64))


def test_bnaf_sampling_speed_is_reasonable():
    """The per-dimension solve reuses earlier dimensions' contributions: 4k points, hidden 32."""
    import time

    node = _make("bnaf", 2, torch.float32, hidden=32)
    z = torch.randn(4000, 2)
    start = time.perf_counter()
    with torch.no_grad():
        x, _ = node.inverse(z)
        assert time.perf_counter() - start < 5.0
        assert _rel_err(node(x)[0], z) < node.tolerance
