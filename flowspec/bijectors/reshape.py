"""Volume-preserving rearrangements: flatten, reshape, squeeze, split, concat.

None of them changes a value, so every log-det is zero; they exist so a graph can
move between vector and image views, trade space for channels (multi-scale
architectures) and route parts of a tensor to different places.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape, batch_zeros
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


def _shape_text(shape: Any) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _axis(dim: int, ndim: int, node: str) -> int:
    """Normalise a (possibly negative) dim of a per-example shape with ``ndim`` dims."""
    if not -ndim <= dim < ndim:
        raise ShapeError(f"{node}: dim {dim} is out of range for a {ndim}-dimensional input")
    return dim % ndim


@NODES.register("flatten", schema=params_schema(), category="reshape",
                examples=[{"in_shape": [2, 3, 2]}, {"in_shape": [3]}])
class Flatten(Bijector):
    """Flatten the per-example shape to a vector ``[prod(shape)]``, e.g. to run vector
    couplings (NICE) on images."""

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None):
        super().__init__(tuple(in_shape), context_shape)

    @classmethod
    def out_shape(cls, in_shape, **_):
        return (math.prod(in_shape),)

    def forward(self, x, context=None):
        return x.reshape(x.shape[0], -1), batch_zeros(x)

    def inverse(self, y, context=None):
        return y.reshape(y.shape[0], *self.in_shape), batch_zeros(y)


@NODES.register(
    "reshape",
    schema=params_schema(
        required=("shape",),
        shape={"type": "array", "items": {"type": "integer", "minimum": -1}, "minItems": 1,
               "description": "new per-example shape; one entry may be -1 (inferred)"},
    ),
    category="reshape",
    examples=[{"in_shape": [12], "params": {"shape": [3, 2, 2]}},
              {"in_shape": [2, 3, 2], "params": {"shape": [-1, 2]}}],
)
class Reshape(Bijector):
    """Reshape the per-example tensor (same number of entries), e.g. a vector back to an image."""

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *, shape: list[int]):
        super().__init__(tuple(in_shape), context_shape)
        self.target = self.out_shape(in_shape, shape=shape)

    @classmethod
    def out_shape(cls, in_shape, shape=None, **_):
        if shape is None:
            raise ValueError("reshape needs a 'shape'")
        shape = [int(d) for d in shape]
        n = math.prod(in_shape)
        if any(d == 0 or d < -1 for d in shape) or shape.count(-1) > 1:
            raise ShapeError(f"reshape: invalid shape {_shape_text(shape)} (positive sizes, "
                             "at most one -1)")
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if n % known:
                raise ShapeError(f"cannot reshape {n} entries to {_shape_text(shape)}")
            shape[shape.index(-1)] = n // known
        elif known != n:
            raise ShapeError(f"cannot reshape {_shape_text(in_shape)} ({n} entries) to "
                             f"{_shape_text(shape)} ({known} entries)")
        return tuple(shape)

    def forward(self, x, context=None):
        return x.reshape(x.shape[0], *self.target), batch_zeros(x)

    def inverse(self, y, context=None):
        return y.reshape(y.shape[0], *self.in_shape), batch_zeros(y)


_FACTOR = {"type": "integer", "minimum": 2, "default": 2,
           "description": "side of the square block moved into channels"}


def _squeeze(x: torch.Tensor, f: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * f * f, h // f, w // f)


def _unsqueeze(x: torch.Tensor, f: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (f * f), h * f, w * f)


@NODES.register("squeeze", schema=params_schema(factor=_FACTOR), category="reshape",
                examples=[{"in_shape": [1, 4, 2]},
                          {"in_shape": [2, 3, 3], "params": {"factor": 3}}])
class Squeeze(Bijector):
    """Space-to-depth: ``[C, H, W] -> [4C, H/2, W/2]``, trading resolution for channels so
    couplings see wider context (RealNVP, Glow multi-scale).

    Channel ``c * f*f + i * f + j`` of the output holds pixel ``(f*y + i, f*x + j)`` of
    input channel ``c`` (Glow's ordering: each channel's sub-pixels are adjacent).
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *, factor: int = 2):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape, factor=factor)
        self.factor = int(factor)

    @classmethod
    def out_shape(cls, in_shape, factor=2, **_):
        if len(in_shape) != 3:
            raise ShapeError(f"squeeze needs an image [C, H, W], got {_shape_text(in_shape)}")
        c, h, w = in_shape
        if h % factor or w % factor:
            raise ShapeError(f"squeeze needs H and W divisible by {factor}, got H={h}, W={w}")
        return (c * factor * factor, h // factor, w // factor)

    def forward(self, x, context=None):
        return _squeeze(x, self.factor), batch_zeros(x)

    def inverse(self, y, context=None):
        return _unsqueeze(y, self.factor), batch_zeros(y)


@NODES.register("unsqueeze", schema=params_schema(factor=_FACTOR), category="reshape",
                examples=[{"in_shape": [4, 1, 2]}, {"in_shape": [8, 2, 1]}])
class Unsqueeze(Squeeze):
    """Depth-to-space, the inverse of ``squeeze``: ``[4C, H, W] -> [C, 2H, 2W]``."""

    @classmethod
    def out_shape(cls, in_shape, factor=2, **_):
        if len(in_shape) != 3:
            raise ShapeError(f"unsqueeze needs an image [C, H, W], got {_shape_text(in_shape)}")
        c, h, w = in_shape
        if c % (factor * factor):
            raise ShapeError(f"unsqueeze needs channels divisible by {factor * factor}, got {c}")
        return (c // (factor * factor), h * factor, w * factor)

    def forward(self, x, context=None):
        return _unsqueeze(x, self.factor), batch_zeros(x)

    def inverse(self, y, context=None):
        return _squeeze(y, self.factor), batch_zeros(y)


_DIM = {"type": "integer", "default": 0,
        "description": "dimension of the per-example shape (0: features or channels)"}


@NODES.register(
    "split",
    schema=params_schema(
        dim=_DIM,
        fraction={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                  "default": 0.5, "description": "share of the first part (rounded down)"},
        sizes={"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 1},
                          "minItems": 2, "maxItems": 2}, {"type": "null"}],
               "default": None, "description": "sizes of the two parts (overrides fraction)"},
    ),
    category="structure",
    examples=[{"in_shape": [4]}, {"in_shape": [5, 2, 2], "params": {"sizes": [2, 3]}},
              {"in_shape": [2, 3, 4], "params": {"dim": -1, "fraction": 0.25}}],
)
class Split(Bijector):
    """Split a tensor in two along ``dim``: multi-scale flows send the second part to a
    latent (``factor_out``) and keep transforming the first.

    The first part has ``floor(n * fraction)`` entries (half of 5 is 2 and 3),
    unless ``sizes`` gives both sizes.
    """

    n_out = 2

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *, dim: int = 0,
                 fraction: float = 0.5, sizes: list[int] | None = None):
        super().__init__(tuple(in_shape), context_shape)
        first, _ = self.out_shape(in_shape, dim=dim, fraction=fraction, sizes=sizes)
        self.axis = _axis(dim, len(in_shape), "split")
        self.sizes = (first[self.axis], in_shape[self.axis] - first[self.axis])

    @classmethod
    def out_shape(cls, in_shape, dim=0, fraction=0.5, sizes=None, **_):
        if not in_shape or not isinstance(in_shape[0], int):
            raise ShapeError("split takes one tensor")
        axis = _axis(dim, len(in_shape), "split")
        n = in_shape[axis]
        if sizes is not None:
            a, b = (int(s) for s in sizes)
            if a + b != n or a < 1 or b < 1:
                raise ShapeError(f"split sizes {list(sizes)} do not add up to {n} (dim {dim})")
        else:
            a = math.floor(n * fraction + 1e-9)
            b = n - a
            if a < 1 or b < 1:
                raise ShapeError(f"split of {n} entries at fraction {fraction} leaves an empty "
                                 "part")
        first, second = list(in_shape), list(in_shape)
        first[axis], second[axis] = a, b
        return tuple(first), tuple(second)

    def forward(self, x, context=None):
        a, b = torch.split(x, self.sizes, dim=self.axis + 1)
        return (a, b), batch_zeros(x)

    def inverse(self, y, context=None):
        return torch.cat(y, dim=self.axis + 1), batch_zeros(y[0])


@NODES.register(
    "concat",
    schema=params_schema(dim=_DIM),
    category="structure",
    examples=[{"in_shape": [[2], [3]]}, {"in_shape": [[2, 3, 2], [1, 3, 2]]},
              {"in_shape": [[2, 3], [2, 1]], "params": {"dim": 1}}],
)
class Concat(Bijector):
    """Join two tensors along ``dim``, the inverse of ``split``: merges branches of a graph."""

    n_in = 2

    def __init__(self, in_shape: tuple[Shape, Shape], context_shape: Shape | None = None, *,
                 dim: int = 0):
        in_shape = tuple(tuple(s) for s in in_shape)
        super().__init__(in_shape, context_shape)
        self.out_shape(in_shape, dim=dim)
        self.axis = _axis(dim, len(in_shape[0]), "concat")
        self.sizes = (in_shape[0][self.axis], in_shape[1][self.axis])

    @classmethod
    def out_shape(cls, in_shape, dim=0, **_):
        if len(in_shape) != 2 or not all(isinstance(s, (tuple, list)) for s in in_shape):
            raise ShapeError("concat takes two tensors")
        a, b = (tuple(s) for s in in_shape)
        if len(a) != len(b):
            raise ShapeError(f"concat: inputs {_shape_text(a)} and {_shape_text(b)} differ in rank")
        axis = _axis(dim, len(a), "concat")
        if a[:axis] + a[axis + 1:] != b[:axis] + b[axis + 1:]:
            raise ShapeError(f"concat: inputs {_shape_text(a)} and {_shape_text(b)} differ "
                             f"outside dim {dim}")
        out = list(a)
        out[axis] = a[axis] + b[axis]
        return tuple(out)

    def forward(self, x, context=None):
        return torch.cat(x, dim=self.axis + 1), batch_zeros(x[0])

    def inverse(self, y, context=None):
        a, b = torch.split(y, self.sizes, dim=self.axis + 1)
        return (a, b), batch_zeros(y)
