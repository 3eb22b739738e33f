"""Tiny test-only nodes, a net and a prior for the spec tests (names start with ``_test_``).

They are real, invertible nodes (the generic contract test may see them), kept
small so the spec tests depend on nothing another module registers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, batch_zeros
from flowspec.distributions.base import PRIORS, Prior
from flowspec.errors import ShapeError
from flowspec.nets.base import NETS, build_net
from flowspec.registry import params_schema, ref

_LOG_2PI = math.log(2 * math.pi)


@NODES.register(
    "_test_scale",
    schema=params_schema(scale={"type": "number", "exclusiveMinimum": 0, "default": 2.0}),
    category="test",
    examples=[{"in_shape": [3]}, {"in_shape": [2, 2], "params": {"scale": 0.5}}],
)
class Scale(Bijector):
    """Multiply by a fixed positive constant (test node)."""

    def __init__(self, in_shape, context_shape=None, *, scale=2.0):
        super().__init__(in_shape, context_shape)
        self.scale = float(scale)
        self.dims = math.prod(in_shape)

    def forward(self, x, context=None):
        return x * self.scale, batch_zeros(x) + self.dims * math.log(self.scale)

    def inverse(self, y, context=None):
        return y / self.scale, batch_zeros(y) - self.dims * math.log(self.scale)


@NODES.register(
    "_test_shift",
    schema=params_schema(
        parity={"type": "integer", "minimum": 0, "maximum": 1, "default": 0},
        hidden={"type": "integer", "minimum": 1, "default": 4},
        net={"anyOf": [ref("net"), {"type": "null"}], "default": None},
    ),
    category="test",
    examples=[
        {"in_shape": [4]},
        {"in_shape": [4], "params": {"parity": 1, "net": {"_test_net": {"hidden": [3]}}},
         "context_shape": [2]},
    ],
)
class Shift(Bijector):
    """Additive coupling on an even-sized vector (test node)."""

    def __init__(self, in_shape, context_shape=None, *, parity=0, hidden=4, net=None):
        super().__init__(in_shape, context_shape)
        self.out_shape(in_shape)
        self.half = in_shape[0] // 2
        self.parity = parity
        self.uses_context = net is not None
        if net is None:
            self.net: nn.Module = nn.Sequential(nn.Linear(self.half, hidden), nn.Tanh(),
                                                nn.Linear(hidden, self.half))
        else:
            self.net = build_net(net, (self.half,), (self.half,), context_shape)

    @classmethod
    def out_shape(cls, in_shape, **params):
        if len(in_shape) != 1 or in_shape[0] % 2:
            raise ShapeError(f"_test_shift needs an even number of features, got "
                             f"{list(in_shape)}")
        return tuple(in_shape)

    def _shift(self, a, context):
        return self.net(a, context) if self.uses_context else self.net(a)

    def _parts(self, x):
        a, b = x[:, :self.half], x[:, self.half:]
        return (b, a) if self.parity else (a, b)

    def _join(self, a, b):
        return torch.cat((b, a) if self.parity else (a, b), 1)

    def forward(self, x, context=None):
        a, b = self._parts(x)
        return self._join(a, b + self._shift(a, context)), batch_zeros(x)

    def inverse(self, y, context=None):
        a, b = self._parts(y)
        return self._join(a, b - self._shift(a, context)), batch_zeros(y)


@NODES.register(
    "_test_split",
    schema=params_schema(dim={"type": "integer", "minimum": 0, "default": 0}),
    category="test",
    examples=[{"in_shape": [4]}, {"in_shape": [2, 4], "params": {"dim": 1}}],
)
class Split(Bijector):
    """Split one dimension in two halves (test node)."""

    n_out = 2

    def __init__(self, in_shape, context_shape=None, *, dim=0):
        super().__init__(in_shape, context_shape)
        self.out_shape(in_shape, dim=dim)
        self.dim = dim

    @classmethod
    def out_shape(cls, in_shape, dim=0, **params):
        if dim >= len(in_shape) or in_shape[dim] % 2:
            raise ShapeError(f"_test_split needs an even size along dim {dim}, got "
                             f"{list(in_shape)}")
        half = list(in_shape)
        half[dim] //= 2
        return (tuple(half), tuple(half))

    def forward(self, x, context=None):
        return tuple(x.chunk(2, dim=self.dim + 1)), batch_zeros(x)

    def inverse(self, y, context=None):
        return torch.cat(y, dim=self.dim + 1), batch_zeros(y[0])


@NODES.register("_test_concat", schema=params_schema(), category="test",
                examples=[{"in_shape": [[2], [3]]}])
class Concat(Bijector):
    """Concatenate two tensors along dim 0 (test node)."""

    n_in = 2

    def __init__(self, in_shape, context_shape=None):
        super().__init__(in_shape, context_shape)
        self.sizes = [s[0] for s in self.out_shape_parts(in_shape)]

    @staticmethod
    def out_shape_parts(in_shape):
        if len(in_shape) != 2 or in_shape[0][1:] != in_shape[1][1:]:
            raise ShapeError(f"_test_concat needs two tensors of matching trailing shape, got "
                             f"{in_shape}")
        return in_shape

    @classmethod
    def out_shape(cls, in_shape, **params):
        a, b = cls.out_shape_parts(in_shape)
        return (a[0] + b[0], *a[1:])

    def forward(self, x, context=None):
        return torch.cat(x, 1), batch_zeros(x[0])

    def inverse(self, y, context=None):
        return tuple(y.split(self.sizes, 1)), batch_zeros(y)


@NETS.register(
    "_test_net",
    schema=params_schema(hidden={"type": "array", "items": {"type": "integer", "minimum": 1},
                                 "default": [8]}),
    category="test",
    examples=[{"in_shape": [2], "out_shape": [3]},
              {"in_shape": [2], "out_shape": [2], "context_shape": [2], "params": {"hidden": []}}],
)
class Net(nn.Module):
    """A small MLP on flattened input (+ context) (test net)."""

    def __init__(self, in_shape, out_shape, context_shape=None, *, hidden=(8,)):
        super().__init__()
        self.out = tuple(out_shape)
        sizes = [math.prod(in_shape) + (math.prod(context_shape) if context_shape else 0),
                 *hidden, math.prod(out_shape)]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.body = nn.Sequential(*layers[:-1])

    def forward(self, x, context=None):
        h = x.reshape(x.shape[0], -1)
        if context is not None:
            h = torch.cat([h, context.reshape(context.shape[0], -1)], 1)
        return self.body(h).reshape(x.shape[0], *self.out)


@PRIORS.register("_test_cond_prior", schema=params_schema(), category="test",
                 examples=[{"shape": [2], "cond_shape": [2]}])
class CondPrior(Prior):
    """Unit Gaussian whose mean is a linear map of the ``cond`` port (test prior)."""

    needs_cond = True

    def __init__(self, shape, context_shape=None, cond_shape=None):
        super().__init__(shape, context_shape, cond_shape)
        self.mean = nn.Linear(math.prod(cond_shape), math.prod(shape))

    def _mean(self, cond):
        return self.mean(cond.reshape(cond.shape[0], -1)).reshape(cond.shape[0], *self.shape)

    def log_prob(self, z, context=None, cond=None):
        eps = z - self._mean(cond)
        return (-0.5 * (eps * eps + _LOG_2PI)).reshape(z.shape[0], -1).sum(1)

    def sample(self, n, temperature=1.0, context=None, cond=None):
        m = self._mean(cond)
        return m + temperature * torch.randn_like(m)
