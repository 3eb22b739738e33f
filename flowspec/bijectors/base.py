"""The one abstraction: a bijector node.

Direction convention (the only place it is defined): **forward maps data to
latent**, ``x -> z``; **inverse maps latent to data**, ``z -> x``. Both return
``(output, logdet)`` where ``logdet`` has shape ``[batch]`` and is
``log|det J|`` of the map just applied, so ``forward`` logdet ==
``-inverse`` logdet at corresponding points.

Shapes are per example (no batch dimension) and static: ``out_shape`` is a
classmethod that needs only the input shape and the parameters, so a whole
graph is shape-checked before a single tensor exists.

Multi-port nodes (split, concat) set ``n_in``/``n_out``; they take and return
tuples of tensors (and tuples of shapes) instead of single ones.

Nodes whose map is closed-form in one direction only (planar, radial, BNAF)
declare ``analytic = "inverse"`` or ``"forward"`` and a ``tolerance``: the
other direction is solved numerically to that tolerance.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from flowspec.registry import Registry

Shape = tuple[int, ...]
Shapes = Shape | tuple[Shape, ...]
Tensors = torch.Tensor | tuple[torch.Tensor, ...]

NODES = Registry("node", plugin_group="flowspec.nodes", title="Bijector nodes")


class Bijector(nn.Module):
    """Base class of every node: an invertible map with a tractable log-det.

    Subclasses are constructed as ``Cls(in_shape, context_shape=None, **params)``
    with ``params`` validated by the node's schema and defaults filled in.
    """

    n_in: ClassVar[int] = 1
    n_out: ClassVar[int] = 1
    #: which direction is closed-form: "both", "forward" or "inverse".
    analytic: ClassVar[str] = "both"
    #: absolute tolerance of the numerically solved direction (0 if exact).
    tolerance: ClassVar[float] = 0.0

    def __init__(self, in_shape: Shapes, context_shape: Shape | None = None, **_: Any):
        super().__init__()
        self.in_shape = in_shape
        self.context_shape = context_shape

    @classmethod
    def out_shape(cls, in_shape: Shapes, **params: Any) -> Shapes:
        """Output shape(s) for ``in_shape``; raise ``ShapeError`` if it cannot be taken."""
        return in_shape

    def forward(self, x: Tensors, context: torch.Tensor | None = None):  # type: ignore[override]
        """Data -> latent: ``(y, logdet[batch])``."""
        raise NotImplementedError

    def inverse(self, y: Tensors, context: torch.Tensor | None = None):
        """Latent -> data: ``(x, logdet[batch])``, the log-det of this inverse map."""
        raise NotImplementedError


def batch_zeros(x: torch.Tensor) -> torch.Tensor:
    """A ``[batch]`` zero log-det matching ``x``'s batch size, dtype and device."""
    return x.new_zeros(x.shape[0])


def sum_except_batch(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)
