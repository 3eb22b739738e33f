"""Likelihood units: the one audited conversion between nats and bits per dimension.

Conventions (see :mod:`flowspec.data.preprocess`): a flow on discrete data models the
dequantized data ``y = (x + u) / 2**n_bits`` on ``[0, 1]^D``, and reports
``nll = -log p(y)`` in nats per example on that scale. The density of the same
points on the integer scale ``[0, 2**n_bits]^D`` is ``p(y) / 2**(n_bits·D)``, and
``E_u[-log p_int(x + u)]`` upper-bounds ``-log P(x)`` of the discrete data
(Theis et al. 2016). So the discrete NLL in nats is ``nll + D·ln 2**n_bits``, and

    bits/dim = (nll + D·n_bits·ln 2) / (D·ln 2) = nll / (D·ln 2) + n_bits.

A uniform density on ``[0, 1]^D`` (nll = 0) is exactly ``n_bits`` bits per dim.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch

Number = TypeVar("Number", float, torch.Tensor)

LN2 = math.log(2.0)


def _check_dims(num_dims: int) -> None:
    if int(num_dims) != num_dims or num_dims <= 0:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")


def discrete_nll_nats(nll_nats: Number, num_dims: int, n_bits: int = 8) -> Number:
    """Per-example NLL (nats) of the ``n_bits`` discrete data, from the ``[0, 1]``-scale NLL."""
    _check_dims(num_dims)
    return nll_nats + num_dims * n_bits * LN2


def bits_per_dim(nll_nats: Number, num_dims: int, n_bits: int = 8) -> Number:
    """``(nll + D·ln 2**n_bits) / (D·ln 2)``: the number the papers report for images.

    ``nll_nats`` is the per-example negative log-density of dequantized data on the
    ``[0, 1]`` scale (what :meth:`Flow.log_prob` gives after the preprocessing).
    """
    return discrete_nll_nats(nll_nats, num_dims, n_bits) / (num_dims * LN2)


def nll_from_bits_per_dim(bpd: Number, num_dims: int, n_bits: int = 8) -> Number:
    """The inverse of :func:`bits_per_dim`: a paper's bits/dim -> ``[0, 1]``-scale nats."""
    _check_dims(num_dims)
    return (bpd - n_bits) * num_dims * LN2


def nats_per_dim(nll_nats: Number, num_dims: int) -> Number:
    """Per-dimension NLL in nats, on whatever scale ``nll_nats`` is (no discretisation term)."""
    _check_dims(num_dims)
    return nll_nats / num_dims
