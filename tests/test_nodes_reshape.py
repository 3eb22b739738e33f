"""Reshaping, routing and permutation nodes: orderings, sizes and shape errors."""

from __future__ import annotations

import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.errors import ShapeError


def build(name, in_shape, **params):
    return NODES.build({name: params}, in_shape)


def out_shape(name, in_shape, **params):
    entry = NODES.get(name)
    return entry.obj.out_shape(in_shape, **entry.with_defaults(params))


def test_flatten_and_reshape():
    x = torch.randn(2, 3, 2, 2)
    node = build("flatten", (3, 2, 2))
    y, ld = node(x)
    assert torch.equal(y, x.reshape(2, 12)) and torch.equal(ld, torch.zeros(2))
    assert torch.equal(node.inverse(y)[0], x)
    assert out_shape("reshape", (12,), shape=[3, -1, 2]) == (3, 2, 2)
    assert torch.equal(build("reshape", (12,), shape=[3, 4])(y)[0], y.reshape(2, 3, 4))


@pytest.mark.parametrize("in_shape,shape,message", [
    ((12,), [5, 2], "12 entries"), ((12,), [5, -1], "cannot reshape"),
    ((12,), [-1, -1], "at most one -1"), ((12,), [0, 12], "positive"),
])
def test_reshape_errors(in_shape, shape, message):
    with pytest.raises(ShapeError, match=message):
        out_shape("reshape", in_shape, shape=shape)


def test_squeeze_uses_glows_channel_order():
    x = torch.arange(2 * 4 * 4.0).reshape(1, 2, 4, 4)
    y, ld = build("squeeze", (2, 4, 4))(x)
    assert y.shape == (1, 8, 2, 2) and torch.equal(ld, torch.zeros(1))
    # channel c * 4 + i * 2 + j holds pixel (2 * row + i, 2 * col + j) of channel c
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[0, c * 4 + i * 2 + j], x[0, c, i::2, j::2])
    assert torch.equal(build("squeeze", (2, 4, 4)).inverse(y)[0], x)
    assert torch.equal(build("unsqueeze", (8, 2, 2))(y)[0], x)
    assert torch.equal(build("unsqueeze", (8, 2, 2)).inverse(x)[0], y)


@pytest.mark.parametrize("name,in_shape,message", [
    ("squeeze", (3, 5, 4), "divisible by 2"), ("squeeze", (3, 4, 5), "divisible by 2"),
    ("squeeze", (8,), "needs an image"), ("unsqueeze", (6, 2, 2), "divisible by 4"),
])
def test_squeeze_errors(name, in_shape, message):
    with pytest.raises(ShapeError, match=message):
        out_shape(name, in_shape)


def test_squeeze_factor():
    assert out_shape("squeeze", (1, 6, 9), factor=3) == (9, 2, 3)


@pytest.mark.parametrize("in_shape,params,expected", [
    ((4,), {}, ((2,), (2,))),
    ((5,), {}, ((2,), (3,))),
    ((6, 2, 2), {"fraction": 1 / 3}, ((2, 2, 2), (4, 2, 2))),
    ((5, 2, 2), {"sizes": [4, 1]}, ((4, 2, 2), (1, 2, 2))),
    ((2, 3, 4), {"dim": -1, "fraction": 0.75}, ((2, 3, 3), (2, 3, 1))),
])
def test_split_sizes(in_shape, params, expected):
    assert out_shape("split", in_shape, **params) == expected
    node = build("split", in_shape, **params)
    x = torch.randn(2, *in_shape)
    (a, b), ld = node(x)
    assert (tuple(a.shape[1:]), tuple(b.shape[1:])) == expected
    assert torch.equal(node.inverse((a, b))[0], x)
    axis = params.get("dim", 0) % len(in_shape) + 1
    assert torch.equal(a, x.narrow(axis, 0, expected[0][axis - 1]))


@pytest.mark.parametrize("in_shape,params,message", [
    ((1,), {}, "empty part"), ((4,), {"sizes": [1, 2]}, "do not add up"),
    ((4, 2), {"dim": 2}, "out of range"),
])
def test_split_errors(in_shape, params, message):
    with pytest.raises(ShapeError, match=message):
        out_shape("split", in_shape, **params)


def test_concat_inverts_split():
    split = build("split", (5, 2), sizes=[2, 3])
    concat = build("concat", ((2, 2), (3, 2)))
    x = torch.randn(3, 5, 2)
    parts, _ = split(x)
    y, ld = concat(parts)
    assert torch.equal(y, x) and torch.equal(ld, torch.zeros(3))
    back, _ = concat.inverse(y)
    assert all(torch.equal(p, q) for p, q in zip(back, parts))
    assert out_shape("concat", ((2, 3), (2, 5)), dim=1) == (2, 8)


@pytest.mark.parametrize("shapes,message", [
    (((2, 3), (2, 4)), "differ outside dim 0"), (((2,), (2, 2)), "differ in rank"),
])
def test_concat_errors(shapes, message):
    with pytest.raises(ShapeError, match=message):
        out_shape("concat", shapes)


# -- permutation --------------------------------------------------------------------------------
def test_permutation_reverse_and_fixed():
    x = torch.arange(4.0)[None]
    assert build("permutation", (4,))(x)[0].tolist() == [[3, 2, 1, 0]]
    img = torch.arange(3.0)[None, :, None, None].expand(1, 3, 2, 2)
    y, _ = build("permutation", (3, 2, 2), kind="fixed", order=[2, 0, 1])(img)
    assert y[0, :, 0, 0].tolist() == [2, 0, 1]


def test_random_permutation_is_seeded_and_saved():
    a = build("permutation", (16,), kind="random", seed=7)
    b = build("permutation", (16,), kind="random", seed=7)
    c = build("permutation", (16,), kind="random", seed=8)
    assert torch.equal(a.perm, b.perm) and not torch.equal(a.perm, c.perm)
    assert sorted(a.perm.tolist()) == list(range(16))
    # the order is in the state dict: a node built with another seed loads it exactly
    c.load_state_dict(a.state_dict())
    x = torch.randn(2, 16)
    assert torch.equal(c(x)[0], a(x)[0])
    assert torch.equal(a.inverse(a(x)[0])[0], x)
    assert {"perm", "inv_perm"} <= set(a.state_dict())


@pytest.mark.parametrize("params,error,message", [
    ({"kind": "fixed", "order": [0, 1]}, ShapeError, "not a permutation"),
    ({"kind": "fixed", "order": [0, 1, 1]}, ShapeError, "not a permutation"),
    ({"kind": "fixed"}, ValueError, "needs an 'order'"),
])
def test_permutation_errors(params, error, message):
    with pytest.raises(error, match=message):
        out_shape("permutation", (3,), **params)
