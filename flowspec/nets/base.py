"""Conditioner networks: the learnable functions inside couplings and priors.

A net maps a tensor of per-example shape ``in_shape`` (plus an optional context
of shape ``context_shape``) to a tensor of per-example shape ``out_shape``. It
need not be invertible. Nets are registered like nodes and written in specs the
same way: ``net: {mlp: {hidden: [1000, 1000]}}``.

Constructed as ``Cls(in_shape, out_shape, context_shape=None, **params)``.
A net may define a classmethod ``check_shapes(in_shape, out_shape)`` that raises
``ShapeError`` for shapes it cannot map (e.g. a conv net on vectors); nodes call
it from their static ``out_shape`` so the mistake is reported at the spec's line.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from flowspec.registry import Registry

NETS = Registry("net", plugin_group="flowspec.nets")


def build_net(
    spec: Any,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    context_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build a conditioner from its spec value (``name`` or ``{name: params}``)."""
    return NETS.build(spec, tuple(in_shape), tuple(out_shape), context_shape=context_shape)
