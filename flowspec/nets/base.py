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

import math
from typing import Any

import torch
from torch import nn

from flowspec.errors import ShapeError, UnknownNameError
from flowspec.registry import Registry, split_named

NETS = Registry("net", plugin_group="flowspec.nets", title="Conditioner networks")


def require_net(net: Any, in_shape: tuple[int, ...], has: Any, refusal: Any) -> None:
    """Refuse, before building, a net that lacks what a node needs of it (it takes time,
    its Lipschitz constant is bounded ...): ``has(cls)`` tests a net class, and
    ``refusal(name, names_that_have_it)`` words the error, raised as a ShapeError so it
    is reported at the spec's line. Unknown or malformed nets are left to the schema."""
    try:
        name, _ = split_named(net)
        cls = NETS.get(name).obj
    except (ValueError, UnknownNameError):
        return
    if not has(cls):
        raise ShapeError(refusal(name, sorted(e.name for e in NETS if has(e.obj))))
    check = getattr(cls, "check_shapes", None)
    if check is not None:
        check(tuple(in_shape), tuple(in_shape))


def build_net(
    spec: Any,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    context_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build a conditioner from its spec value (``name`` or ``{name: params}``)."""
    return NETS.build(spec, tuple(in_shape), tuple(out_shape), context_shape=context_shape)


def context_as_channels(x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Append ``context`` to the image batch ``x`` as channels: an image context of the
    same size as is, anything else flattened and broadcast over every pixel."""
    if context is None:
        return x
    b, _, h, w = x.shape
    context = context.to(x.dtype)
    if context.dim() == 4 and context.shape[2:] == x.shape[2:]:
        return torch.cat([x, context], 1)
    return torch.cat([x, context.reshape(b, -1, 1, 1).expand(b, -1, h, w)], 1)


def context_channel_count(context_shape: tuple[int, ...] | None, spatial: tuple[int, ...]) -> int:
    """How many channels :func:`context_as_channels` adds for ``context_shape``."""
    if context_shape is None:
        return 0
    if len(context_shape) == 3 and tuple(context_shape[1:]) == tuple(spatial):
        return int(context_shape[0])
    return math.prod(context_shape)
