"""Masks, couplings and the rational-quadratic spline: behaviour beyond the generic contract."""

from __future__ import annotations

import math

import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.bijectors.masks import Partition, mask_shapes
from flowspec.bijectors.spline import rq_spline
from flowspec.errors import ShapeError
from flowspec.nets.mlp import MLP
from flowspec.nets.resnet import ResNet

SMALL = {"mlp": {"hidden": [8], "zero_init": False}}


def build(name, in_shape, context_shape=None, **params):
    torch.manual_seed(0)
    return NODES.build({name: params}, tuple(in_shape), context_shape=context_shape)


# -- masks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask,n,parity,kept,part", [
    ("half", 5, 0, (2,), (3,)),
    ("half", 5, 1, (3,), (2,)),
    ("alternate", 5, 0, (3,), (2,)),
    ("alternate", 5, 3, (2,), (3,)),
    ("half", 4, 2, (2,), (2,)),
])
def test_mask_sizes(mask, n, parity, kept, part):
    assert mask_shapes((n,), mask, parity) == (kept, part)


def test_partition_selects_the_documented_entries():
    x = torch.arange(5.0)[None]
    kept, part = Partition((5,), "half", 0).split(x)
    assert kept.tolist() == [[0, 1]] and part.tolist() == [[2, 3, 4]]
    kept, part = Partition((5,), "alternate", 0).split(x)
    assert kept.tolist() == [[0, 2, 4]] and part.tolist() == [[1, 3]]
    kept, part = Partition((5,), "alternate", 1).split(x)
    assert kept.tolist() == [[1, 3]] and part.tolist() == [[0, 2, 4]]
    img = torch.arange(4 * 2 * 2.0).reshape(1, 4, 2, 2)
    kept, part = Partition((4, 2, 2), "channel", 1).split(img)
    assert torch.equal(kept, img[:, 2:]) and torch.equal(part, img[:, :2])
    board = Partition((1, 2, 3), "checkerboard", 0)
    kept, part = board.split(torch.ones(1, 1, 2, 3))
    assert kept[0, 0].tolist() == [[1, 0, 1], [0, 1, 0]]
    assert torch.equal(part, torch.ones(1, 1, 2, 3))


@pytest.mark.parametrize("in_shape,mask,parity", [
    ((5,), "half", 0), ((5,), "alternate", 1), ((7, 2), "alternate", 0),
    ((3, 2, 2), "channel", 1), ((2, 3, 3), "checkerboard", 1),
])
def test_partition_merge_inverts_split(in_shape, mask, parity):
    p = Partition(in_shape, mask, parity)
    x = torch.randn(4, *in_shape)
    kept, part = p.split(x)
    assert torch.equal(p.merge(kept, part), x)


@pytest.mark.parametrize("in_shape,mask,message", [
    ((1, 4, 4), "channel", "channel mask needs at least 2 channels"),
    ((6,), "channel", "use mask: half"),
    ((6,), "checkerboard", "image input"),
    ((3, 1, 1), "checkerboard", "at least 2 pixels"),
    ((1,), "half", "at least 2"),
])
def test_impossible_masks_are_shape_errors(in_shape, mask, message):
    with pytest.raises(ShapeError, match=message):
        NODES.get("affine_coupling").obj.out_shape(in_shape, mask=mask, parity=0, net=None)


# -- couplings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", [
    ("additive_coupling", {}), ("affine_coupling", {"scale": "tanh"}),
    ("affine_coupling", {"scale": "exp"}), ("rq_spline_coupling", {}),
])
@pytest.mark.parametrize("in_shape,mask", [((5,), "half"), ((2, 4, 4), "checkerboard")])
def test_couplings_start_as_the_identity(name, params, in_shape, mask):
    net = {"mlp": {"hidden": [8]}} if len(in_shape) == 1 else {"resnet": {"blocks": 1, "width": 4}}
    node = build(name, in_shape, mask=mask, net=net, **params)
    x = 2 * torch.randn(3, *in_shape)
    y, ld = node(x)
    assert torch.allclose(y, x, rtol=0, atol=1e-6)  # splines: identity up to rounding
    assert float(ld.detach().abs().max()) < 1e-5


def test_glow_sigmoid_scale_starts_at_sigmoid_two():
    node = build("affine_coupling", (4,), scale="sigmoid", net={"mlp": {"hidden": [8]}})
    x = torch.randn(3, 4)
    y, ld = node(x)
    s = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(y[:, 2:], x[:, 2:] * s) and torch.equal(y[:, :2], x[:, :2])
    assert torch.allclose(ld, torch.full((3,), 2 * math.log(s)))


@pytest.mark.parametrize("name", ["additive_coupling", "affine_coupling", "rq_spline_coupling"])
@pytest.mark.parametrize("parity,kept_slice", [(0, slice(0, 3)), (1, slice(3, 7)),
                                               (2, slice(0, 3))])
def test_parity_chooses_the_part_that_is_kept(name, parity, kept_slice):
    node = build(name, (7,), parity=parity, net=SMALL)
    x = torch.randn(4, 7).clamp(-2.5, 2.5)  # inside the spline's bound
    y, _ = node(x)
    assert torch.equal(y[:, kept_slice], x[:, kept_slice])
    changed = torch.ones(7, dtype=torch.bool)
    changed[kept_slice] = False
    assert (y[:, changed] != x[:, changed]).all()


def test_checkerboard_keeps_its_squares():
    node = build("affine_coupling", (2, 3, 3), mask="checkerboard",
                 net={"resnet": {"blocks": 1, "width": 4, "zero_init": False}})
    x = torch.randn(2, 2, 3, 3)
    y, _ = node(x)
    board = (torch.arange(3)[:, None] + torch.arange(3)[None]) % 2 == 0
    assert torch.equal(y[:, :, board], x[:, :, board])
    assert (y[:, :, ~board] != x[:, :, ~board]).all()


def test_affine_tanh_scale_is_bounded_by_the_learned_factor():
    node = build("affine_coupling", (4,), net={"mlp": {"hidden": [8], "zero_init": False}})
    with torch.no_grad():
        node.net.net[-1].weight.mul_(1000)  # saturate tanh
        node.scale_factor.fill_(0.5)
    _, ld = node(torch.randn(16, 4))
    assert (ld.abs() <= 2 * 0.5 + 1e-6).all()  # 2 transformed entries, |s| <= 0.5 each


def test_default_conditioners():
    assert isinstance(build("affine_coupling", (6,)).net, MLP)
    assert [m.out_features for m in build("affine_coupling", (6,)).net.modules()
            if isinstance(m, torch.nn.Linear)] == [256, 256, 6]
    assert isinstance(build("affine_coupling", (2, 4, 4), mask="checkerboard").net, ResNet)


def test_image_net_on_vectors_is_rejected_before_building():
    cls = NODES.get("affine_coupling").obj
    with pytest.raises(ShapeError, match="use net: mlp"):
        cls.out_shape((6,), mask="half", parity=0, net={"resnet": {}})


def test_context_conditions_the_coupling():
    node = build("affine_coupling", (4,), context_shape=(3,), net=SMALL)
    x = torch.randn(5, 4)
    c = torch.randn(5, 3)
    y1, _ = node(x, c)
    y2, _ = node(x, c + 1)
    assert not torch.allclose(y1, y2)
    xr, _ = node.inverse(y1, c)
    assert torch.allclose(xr, x, atol=1e-6)


def test_image_context_is_broadcast_as_channels():
    node = build("additive_coupling", (2, 4, 4), context_shape=(3,), mask="channel",
                 net={"resnet": {"blocks": 1, "width": 4, "zero_init": False}})
    x = torch.randn(2, 2, 4, 4)
    y1, _ = node(x, torch.zeros(2, 3))
    y2, _ = node(x, torch.ones(2, 3))
    assert not torch.allclose(y1, y2)


# -- the rational-quadratic spline ----------------------------------------------------------------
def _random_spline(n: int, bins: int, seed: int = 0, scale: float = 2.0):
    gen = torch.Generator().manual_seed(seed)

    def r(k):
        return scale * torch.randn(n, k, generator=gen, dtype=torch.float64)

    return r(bins), r(bins), r(bins - 1)


def _knots(u, bound):
    from flowspec.bijectors.spline import MIN_WIDTH
    w = MIN_WIDTH + (1 - MIN_WIDTH * u.shape[-1]) * torch.softmax(u, -1)
    return -bound + 2 * bound * torch.cat([torch.zeros(u.shape[0], 1), torch.cumsum(w, -1)], 1)


def test_spline_interpolates_its_knots_with_the_given_slopes():
    """The defining properties (Durkan et al. eq. 4): knots map to knots, the slope at
    each interior knot is min_d + softplus(u + c), and it is 1 at the boundary."""
    from flowspec.bijectors.spline import _UNIT_DERIVATIVE, MIN_DERIVATIVE
    bins, bound = 5, 2.0
    uw, uh, ud = _random_spline(1, bins, scale=0.5)
    xk, yk = _knots(uw, bound), _knots(uh, bound)
    expand = [t.expand(bins + 1, -1) for t in (uw, uh, ud)]
    y, ld = rq_spline(xk[0], *expand, bound)
    assert torch.allclose(y, yk[0], atol=1e-12)
    slopes = MIN_DERIVATIVE + torch.nn.functional.softplus(ud[0] + _UNIT_DERIVATIVE)
    expected = torch.cat([torch.ones(1), slopes, torch.ones(1)]).double()
    # slope from inside each knot's neighbourhood (one-sided at the ends)
    h = 1e-8
    left = xk[0].clone()
    left[1:] -= h
    right = xk[0].clone()
    right[:-1] += h
    fd = (rq_spline(right, *expand, bound)[0] - rq_spline(left, *expand, bound)[0]) / (right - left)
    assert torch.allclose(fd, expected, rtol=1e-5)
    assert torch.allclose(ld, torch.log(expected), atol=1e-10)


def test_spline_is_monotone_invertible_and_identity_outside():
    bins, bound = 8, 3.0
    n = 2001
    x = torch.linspace(-5, 5, n, dtype=torch.float64)
    uw, uh, ud = (t.expand(n, -1) for t in _random_spline(1, bins, seed=1))
    y, ld = rq_spline(x, uw, uh, ud, bound)
    assert (y[1:] > y[:-1]).all()
    outside = x.abs() > bound
    assert torch.equal(y[outside], x[outside])
    assert torch.equal(ld[outside], torch.zeros_like(ld[outside]))
    xr, ld_inv = rq_spline(y, uw, uh, ud, bound, inverse=True)
    assert torch.allclose(xr, x, atol=1e-12) and torch.allclose(ld_inv, -ld, atol=1e-10)
    # log-derivative against autograd through the forward formula
    xg = x.clone().requires_grad_(True)
    (dy,) = torch.autograd.grad(rq_spline(xg, uw, uh, ud, bound)[0].sum(), xg)
    assert torch.allclose(torch.log(dy), ld, atol=1e-10)


def test_spline_float32_inverse_is_accurate():
    n = 4096
    gen = torch.Generator().manual_seed(2)
    x = 3.2 * (2 * torch.rand(n, generator=gen) - 1)
    for scale in (0.5, 1.0):
        uw, uh, ud = (t.float() for t in _random_spline(n, 8, seed=3, scale=scale))
        y, ld = rq_spline(x, uw, uh, ud, 3.0)
        xr, _ = rq_spline(y, uw, uh, ud, 3.0, inverse=True)
        err = (xr - x).abs()
        # absolute for gentle splines; measured in y (times dy/dx) where bins get steep
        assert float((err * ld.exp() if scale > 0.5 else err).max()) < 1e-5
