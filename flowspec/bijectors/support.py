"""Support: a bounded or positive feature mapped onto the real line, inside the flow.

A Gaussian-based flow puts mass on the whole real line, so samples of a positive
quantity come out negative and a parameter box leaks. Declaring the support maps
each feature bijectively onto R before the other nodes -- ``log(x - low)`` for
``(low, inf)``, ``-log(high - x)`` for ``(-inf, high)``, a scaled logit for
``(low, high)`` -- and the inverse maps every sample back inside, so samples never
leave the support. The log-det is counted, so ``log_prob`` is the density of the
data in its own units.

Declared per feature (``low``/``high``: one number for all, or a list with
``null`` for an open side), or per column at the data level
(``data.dataset.file.support``), which inserts this node first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from flowspec.autocast import upcast
from flowspec.bijectors.base import NODES, Bijector, Shape, sum_except_batch
from flowspec.errors import ShapeError
from flowspec.registry import params_schema

Bound = float | None | list[float | None]
_BOUND = {"anyOf": [{"type": "number"}, {"type": "null"},
                    {"type": "array", "items": {"type": ["number", "null"]}, "minItems": 1}]}


def _full(value: Bound, in_shape: Shape, name: str) -> torch.Tensor:
    """A bound -> a float64 tensor of ``in_shape`` (NaN: no bound on that side)."""
    if isinstance(value, (list, tuple)):
        if len(value) != in_shape[0]:
            raise ShapeError(f"support: {name} lists {len(value)} bound(s) for {in_shape[0]} "
                             f"features (dim 0 of the input {list(in_shape)})")
        t = torch.tensor([float("nan") if v is None else float(v) for v in value],
                         dtype=torch.float64)
        return t.reshape((in_shape[0],) + (1,) * (len(in_shape) - 1)).expand(in_shape).clone()
    return torch.full(tuple(in_shape), float("nan") if value is None else float(value),
                      dtype=torch.float64)


@NODES.register(
    "support",
    schema=params_schema(
        low={**_BOUND, "default": None,
             "description": "lower bound of each feature (one number, or a list with null "
                            "for none); 0 for a positive quantity"},
        high={**_BOUND, "default": None,
              "description": "upper bound of each feature (one number, or a list with null)"},
    ),
    category="preprocessing",
    examples=[{"in_shape": [3], "params": {"low": 0}},
              {"in_shape": [3], "params": {"low": 0, "high": 1000}},
              {"in_shape": [2], "params": {"high": 60}},
              {"in_shape": [4], "params": {"low": [0, -1, None, None],
                                           "high": [None, 500, 60, None]}},
              {"in_shape": [2, 2, 2], "params": {"low": 0, "high": [400, 900]}}],
    domain="positive",
)
class Support(Bijector):
    """Maps a declared support onto the real line: ``log(x - low)`` (lower bound),
    ``-log(high - x)`` (upper), a scaled logit (both); samples never leave the support.

    Bounds are per feature (dim 0 of the input; ``null``: open on that side). The
    log-det is counted, so the NLL stays in the data's units.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 low: Bound = None, high: Bound = None):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape, low=low, high=high)
        lo, hi = _full(low, in_shape, "low"), _full(high, in_shape, "high")
        has_lo, has_hi = ~torch.isnan(lo), ~torch.isnan(hi)
        if (has_lo & has_hi & (hi <= lo)).any():
            raise ShapeError("support: every high must be above its low")
        if not (has_lo | has_hi).any():
            raise ShapeError("support: give low, high or both (otherwise it is the identity)")
        both = has_lo & has_hi
        self.register_buffer("both", both, persistent=False)
        self.register_buffer("lo_only", has_lo & ~has_hi, persistent=False)
        self.register_buffer("hi_only", has_hi & ~has_lo, persistent=False)
        self.register_buffer("lo", torch.where(has_lo, lo, 0.0), persistent=False)
        self.register_buffer("hi", torch.where(has_hi, hi, 1.0), persistent=False)
        self.register_buffer("width", torch.where(both, hi - lo, 1.0), persistent=False)

    @classmethod
    def out_shape(cls, in_shape: Any, **params: Any) -> Shape:
        if not in_shape or not all(isinstance(d, int) for d in in_shape):
            raise ShapeError("support takes one tensor with at least one dimension")
        return tuple(in_shape)

    def _parts(self, t: torch.Tensor):
        d = dict(device=t.device, dtype=t.dtype)
        return (self.lo.to(**d), self.hi.to(**d), self.width.to(**d),
                self.both, self.lo_only, self.hi_only)

    def forward(self, x, context=None):
        x = upcast(x)
        lo, hi, width, both, lo_only, hi_only = self._parts(x)
        # Each branch reads a safe stand-in where it does not apply (no NaN in any branch).
        u = torch.where(both, (x - lo) / width, 0.5)
        above = torch.where(lo_only, x - lo, 1.0)
        below = torch.where(hi_only, hi - x, 1.0)
        log_u, log_1mu = torch.log(u), torch.log1p(-u)
        y = torch.where(both, log_u - log_1mu, x)
        y = torch.where(lo_only, torch.log(above), y)
        y = torch.where(hi_only, -torch.log(below), y)
        ld = torch.where(both, -log_u - log_1mu - torch.log(width), 0.0)
        ld = ld + torch.where(lo_only, -torch.log(above), 0.0)
        ld = ld + torch.where(hi_only, -torch.log(below), 0.0)
        return y, sum_except_batch(ld)

    def inverse(self, y, context=None):
        y = upcast(y)
        lo, hi, width, both, lo_only, hi_only = self._parts(y)
        yb = torch.where(both, y, 0.0)
        x = torch.where(both, lo + width * torch.sigmoid(yb), y)
        x = torch.where(lo_only, lo + torch.exp(torch.where(lo_only, y, 0.0)), x)
        x = torch.where(hi_only, hi - torch.exp(-torch.where(hi_only, y, 0.0)), x)
        ld = torch.where(both, torch.log(width) + F.logsigmoid(yb) + F.logsigmoid(-yb), 0.0)
        ld = ld + torch.where(lo_only, y, 0.0) - torch.where(hi_only, y, 0.0)
        return x, sum_except_batch(ld)
