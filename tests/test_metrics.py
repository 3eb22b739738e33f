"""The nats <-> bits/dim conversion, pinned on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from flowspec.metrics import (
    bits_per_dim,
    discrete_nll_nats,
    nats_per_dim,
    nll_from_bits_per_dim,
)


def test_zero_nll_is_n_bits_per_dim():
    # A uniform density on [0, 1]^D has nll 0: exactly n_bits bits per dim.
    assert bits_per_dim(0.0, 1) == pytest.approx(8.0)
    assert bits_per_dim(0.0, 3072) == pytest.approx(8.0)
    assert bits_per_dim(0.0, 10, n_bits=5) == pytest.approx(5.0)


def test_hand_computed_values():
    # D = 1: nll = ln 2 nats is one more bit.
    assert bits_per_dim(math.log(2), 1) == pytest.approx(9.0)
    # D = 2, nll = -2 ln 2 (density 4 on [0,1]^2): 8 - 1 = 7 bits/dim.
    assert bits_per_dim(-2 * math.log(2), 2) == pytest.approx(7.0)
    # 5-bit data, D = 4, nll = 4 ln 2: 5 + 1 = 6.
    assert bits_per_dim(4 * math.log(2), 4, n_bits=5) == pytest.approx(6.0)


def test_nice_mnist():
    # NICE reports log-likelihood 1980.50 nats on MNIST ([0,1] scale, D = 784); papers
    # quote that as 4.36 bits/dim: -1980.5 / (784 ln 2) + 8 = 4.3555...
    bpd = bits_per_dim(-1980.5, 784)
    assert bpd == pytest.approx(8 - 1980.5 / (784 * math.log(2)), abs=1e-12)
    assert round(bpd, 2) == 4.36


def test_discrete_nats_and_inverse():
    assert discrete_nll_nats(0.0, 784) == pytest.approx(784 * 8 * math.log(2))
    for bpd in (3.35, 1.05, 8.0):
        nll = nll_from_bits_per_dim(bpd, 3072)
        assert bits_per_dim(nll, 3072) == pytest.approx(bpd)
    assert nats_per_dim(10.0, 4) == 2.5


def test_tensors_elementwise():
    nll = torch.tensor([0.0, math.log(2)], dtype=torch.float64)
    out = bits_per_dim(nll, 1)
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, torch.tensor([8.0, 9.0], dtype=torch.float64))


@pytest.mark.parametrize("dims", [0, -3, 2.5])
def test_bad_dims(dims):
    with pytest.raises(ValueError):
        bits_per_dim(0.0, dims)
