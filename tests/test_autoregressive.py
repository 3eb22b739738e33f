"""What the generic contract test cannot know about the autoregressive family: the
MADE's autoregressive property, the D-pass inverses, and the order as model state."""

from __future__ import annotations

import pytest
import torch

import flowspec
from flowspec.bijectors import NODES
from flowspec.check import jitter_parameters
from flowspec.errors import ShapeError, SpecError
from flowspec.nets import build_net
from flowspec.nets.made import make_ranks


def _jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` Jacobian of a per-example map at one example ``x [1, D]``."""
    return torch.autograd.functional.jacobian(lambda v: f(v[None])[0].reshape(-1), x[0])


@pytest.mark.parametrize("order,hidden,ctx", [
    ("natural", [16, 16], None),
    ("reverse", [12], 3),
    ("random", [9, 7, 11], None),
    ([3, 0, 4, 1, 2], [], 2),
    ("random", [5], 1),  # narrower than D - 1: some degrees have no unit
])
def test_made_output_depends_only_on_earlier_inputs(order, hidden, ctx):
    torch.manual_seed(0)
    d, p = 5, 3
    net = build_net({"made": {"hidden": hidden, "order": order, "seed": 4, "zero_init": False,
                              "activation": "tanh"}},
                    (d,), (d * p,), (ctx,) if ctx else None).double()
    jitter_parameters(net, amount=0.5)
    x = torch.randn(1, d, dtype=torch.float64)
    c = torch.randn(1, ctx, dtype=torch.float64) if ctx else None
    jac = _jacobian(lambda v: net(v, c), x).reshape(d, p, d)
    ranks = net.order
    allowed = ranks[None, :] < ranks[:, None]  # [i, j]: rank(j) < rank(i)
    assert (jac.abs().amax(1)[~allowed] == 0).all(), "an output sees a later input"
    if hidden:  # and it does see every earlier input (the masks are not over-restrictive)
        assert (jac.abs().amax(1)[allowed] > 0).all() or min(hidden) < d - 1


def test_made_context_reaches_every_dimension():
    """Even the first dimension in the order gets context-dependent parameters."""
    torch.manual_seed(0)
    net = build_net({"made": {"hidden": [8], "zero_init": False}}, (3,), (6,), (2,)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    delta = (net(x, c) - net(x, c + 1.0)).reshape(4, 3, 2).abs().amax((0, 2))
    assert (delta > 0).all()


def test_made_rejects_images_and_bad_orders():
    with pytest.raises(ShapeError, match="vector"):
        build_net("made", (1, 2, 2), (8,))
    with pytest.raises(ShapeError, match="permutation"):
        make_ranks(3, [0, 0, 1])
    assert make_ranks(4, "natural", parity=1).tolist() == [3, 2, 1, 0]


def _node(name: str, d: int = 6, ctx: int | None = None, **params):
    torch.manual_seed(0)
    node = NODES.build({name: {"hidden": [16, 16], **params}}, (d,),
                       context_shape=(ctx,) if ctx else None).double()
    jitter_parameters(node, amount=0.5)
    return node


@pytest.mark.parametrize("name", ["maf", "iaf", "rq_spline_autoregressive"])
def test_slow_direction_takes_exactly_d_passes(name):
    node = _node(name, d=6, ctx=2, order="random", seed=1)
    calls = []
    original = node.elementwise

    def counting(u, theta, inverse):
        calls.append(inverse)
        return original(u, theta, inverse)

    node.elementwise = counting
    x = torch.randn(5, 6, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    slow = node.forward if name == "iaf" else node.inverse
    fast = node.inverse if name == "iaf" else node.forward
    with torch.no_grad():
        slow(x, c)
    assert calls == [True] * 6
    calls.clear()
    fast(x, c)
    assert calls == [False], "the fast direction is one MADE pass"


@pytest.mark.parametrize("name", ["maf", "iaf", "rq_spline_autoregressive"])
def test_no_grad_and_grad_paths_agree(name):
    """The in-place (no_grad) and differentiable D-pass loops compute the same thing."""
    node = _node(name, d=5, ctx=3, order="reverse")
    y = torch.randn(7, 5, dtype=torch.float64)
    c = torch.randn(7, 3, dtype=torch.float64)
    slow = node.forward if name == "iaf" else node.inverse
    with torch.no_grad():
        a, la = slow(y, c)
    b, lb = slow(y.requires_grad_(True), c)
    assert torch.allclose(a, b.detach(), atol=1e-12) and torch.allclose(la, lb.detach(), atol=1e-12)
    (b.sum() + lb.sum()).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_parity_alternates_the_order_in_a_spec():
    spec = {
        "model": {
            "input": [4],
            "flow": [{"repeat": 3, "as": "i",
                      "body": [{"maf": {"hidden": [8], "parity": "${i}"}}]}],
        }
    }
    flow = flowspec.load(spec)
    ranks = [m.made.order.tolist() for _, m in flow.node_items()]
    assert ranks == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]


def test_random_order_is_restored_from_the_state_dict():
    spec = {"model": {"input": [6], "flow": [{"rq_spline_autoregressive": {
        "hidden": [8], "order": "random"}}]}}
    torch.manual_seed(1)
    a = flowspec.load(spec)
    jitter_parameters(a)
    torch.manual_seed(2)
    b = flowspec.load(spec)
    assert not torch.equal(a.node_items()[0][1].made.order, b.node_items()[0][1].made.order)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 6)
    assert torch.equal(a.log_prob(x), b.log_prob(x))
    assert torch.allclose(b.decode(a.encode(x)), x, atol=1e-5)


def test_images_are_rejected_at_the_spec_line():
    spec = "model:\n  input: [1, 2, 2]\n  flow:\n    - maf: {hidden: [4]}\n"
    with pytest.raises(SpecError, match="flatten"):
        flowspec.load(spec)
    bad = "model:\n  input: [3]\n  flow:\n    - iaf: {order: [0, 1]}\n"
    with pytest.raises(SpecError, match="permutation"):
        flowspec.load(bad)


def test_iaf_samples_with_density_in_one_pass():
    """IAF's use: reverse KL needs samples and their log-density; both come from the
    inverse walk, so each layer's MADE runs once."""
    spec = {"model": {"input": [3], "flow": [{"repeat": 2, "as": "i", "body": [
        {"iaf": {"hidden": [8], "parity": "${i}"}}]}]}}
    torch.manual_seed(0)
    flow = flowspec.load(spec).double()
    jitter_parameters(flow, amount=0.5)
    x, lp = flow.sample_and_log_prob(16)
    assert torch.allclose(lp, flow.log_prob(x), atol=1e-10)
