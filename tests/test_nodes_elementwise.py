"""Elementwise nodes (diag_scale, logit, affine) and batch_norm: formulas and modes."""

from __future__ import annotations

import math

import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.check import jacobian_logdet
from flowspec.errors import ShapeError


def build(name, in_shape, **params):
    return NODES.build({name: params}, in_shape).double()


def test_diag_scale():
    node = build("diag_scale", (3,))
    with torch.no_grad():
        node.log_scale.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    x = torch.randn(4, 3, dtype=torch.float64)
    y, ld = node(x)
    assert torch.allclose(y, x * torch.exp(node.log_scale))
    assert torch.allclose(ld, torch.full((4,), 1.5, dtype=torch.float64))


def test_logit_matches_realnvp_formula():
    alpha = 0.05
    node = build("logit", (2,), alpha=alpha)
    x = torch.tensor([[0.0, 1.0], [0.5, 0.25]], dtype=torch.float64)
    y, ld = node(x)
    p = alpha + (1 - 2 * alpha) * x
    assert torch.allclose(y, torch.log(p / (1 - p)))
    # d/dx logit(alpha + (1-2a) x) = (1-2a) / (p (1-p)); x = 0 and 1 are finite
    expected = (math.log(1 - 2 * alpha) - torch.log(p * (1 - p))).sum(1)
    assert torch.allclose(ld, expected) and torch.isfinite(ld).all()
    assert y[0, 0] == pytest.approx(math.log(0.05 / 0.95))
    xr, ld_inv = node.inverse(y)
    assert torch.allclose(xr, x, atol=1e-12) and torch.allclose(ld_inv, -ld)


def test_logit_without_alpha_is_the_plain_logit():
    node = build("logit", (1,), alpha=0.0)
    x = torch.tensor([[0.2]], dtype=torch.float64)
    y, ld = node(x)
    assert float(y) == pytest.approx(math.log(0.25))
    assert float(ld) == pytest.approx(-math.log(0.2 * 0.8))


def test_affine_preprocessing():
    node = build("affine", (3,), scale=2.0, shift=-1.0)
    x = torch.rand(5, 3, dtype=torch.float64)
    y, ld = node(x)
    assert torch.allclose(y, 2 * x - 1)
    assert torch.allclose(ld, torch.full((5,), 3 * math.log(2), dtype=torch.float64))
    per_channel = build("affine", (2, 2, 2), scale=[0.5, -3.0], shift=[1.0, 0.0])
    x = torch.randn(2, 2, 2, 2, dtype=torch.float64)
    y, ld = per_channel(x)
    assert torch.allclose(y[:, 0], 0.5 * x[:, 0] + 1) and torch.allclose(y[:, 1], -3 * x[:, 1])
    assert torch.allclose(ld, torch.full((2,), 4 * (math.log(0.5) + math.log(3)),
                                         dtype=torch.float64))


@pytest.mark.parametrize("params,error,message", [
    ({"scale": 0.0}, ValueError, "nonzero"),
    ({"scale": [1.0, 2.0]}, ShapeError, "dim 0 has 3"),
    ({"shift": [1.0]}, ShapeError, "dim 0 has 3"),
])
def test_affine_errors(params, error, message):
    entry = NODES.get("affine")
    with pytest.raises(error, match=message):
        entry.obj.out_shape((3,), **entry.with_defaults(params))


# -- batch norm -----------------------------------------------------------------------------------
def _batch(shape, n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 3.0 + 2.0 * torch.randn(n, *shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 3)])
def test_batch_norm_train_mode_normalises_with_batch_statistics(shape):
    node = build("batch_norm", shape, momentum=0.25).train()
    x = _batch(shape)
    y, ld = node(x)
    dims = [0, *range(2, x.dim())]
    assert torch.allclose(y.mean(dims), torch.zeros(shape[0], dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.var(dims, unbiased=False), torch.ones(shape[0], dtype=torch.float64),
                          atol=1e-4)
    var = x.var(dims, unbiased=False)
    positions = math.prod(shape[1:])
    assert torch.allclose(ld, (-0.5 * torch.log(var + 1e-5)).sum().expand(64) * positions)
    mean = x.mean(dims)
    view = (shape[0],) + (1,) * (len(shape) - 1)
    assert torch.allclose(node.running_mean, (0.25 * mean).reshape(view))
    assert torch.allclose(node.running_var, (0.75 + 0.25 * var).reshape(view))


def test_batch_norm_train_logdet_is_the_jacobian_with_frozen_batch_statistics():
    """With momentum 1 the running statistics become the batch's, so eval mode is the
    train-mode map with its statistics frozen: same output, same log-det, and that
    log-det is the per-example autograd log|det J|."""
    shape = (2, 2, 2)
    node = build("batch_norm", shape, momentum=1.0)
    with torch.no_grad():
        node.log_gamma.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64).reshape(2, 1, 1))
        node.beta.copy_(torch.tensor([1.0, -2.0], dtype=torch.float64).reshape(2, 1, 1))
    x = _batch(shape, n=8)
    y_train, ld_train = node.train()(x)
    node.eval()
    y_eval, ld_eval = node(x)
    assert torch.allclose(y_train, y_eval) and torch.allclose(ld_train, ld_eval)
    assert torch.allclose(jacobian_logdet(node, x[:3]), ld_train[:3])
    xr, ld_inv = node.inverse(y_eval)
    assert torch.allclose(xr, x, atol=1e-12) and torch.allclose(ld_inv, -ld_eval)


def test_batch_norm_eval_mode_uses_running_statistics_and_saves_them():
    node = build("batch_norm", (3,), momentum=0.5).train()
    node(_batch((3,)))
    node.eval()
    x = _batch((3,), n=5, seed=1)
    y, _ = node(x)
    expected = (x - node.running_mean) / torch.sqrt(node.running_var + 1e-5)
    assert torch.allclose(y, expected)
    assert {"running_mean", "running_var"} <= set(node.state_dict())
    # eval mode does not touch the statistics
    before = node.running_mean.clone()
    node(x + 10)
    assert torch.equal(node.running_mean, before)
