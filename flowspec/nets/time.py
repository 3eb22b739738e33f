"""Time-conditioned nets: the vector field ``f(z, t[, context])`` of a ``cnf`` node.

They are called as ``net(z, context, t)`` with ``t`` a scalar tensor (the ODE
time) or one time per example ``[B]``; ``t`` defaults to 0, so they also work as
ordinary nets. A net that takes time sets ``takes_time = True``; the ``cnf``
node refuses nets that do not (at the spec's line).

* ``time_mlp``: FFJORD's ``concatsquash`` layers ``(W z + b) · σ(a t + c) + d t``
  (time as a scale and shift of every layer) or ``concat`` (time appended to
  every layer's input). ``time_features: n`` feeds ``t`` with its Fourier features
  ``sin(2^k π t), cos(2^k π t)``, ``k < n``, instead of ``t`` alone (as zuko's CNF
  feeds sin/cos of t): the field's time dependence then starts from several
  frequencies instead of one scalar. ``space_features: n`` feeds ``z`` with ``n``
  random Fourier features ``sin(2π B z), cos(2π B z)``, ``B ~ N(0, space_scale²)``
  fixed at construction (Tancik et al. 2020): an MLP on ``z`` alone is slow to
  learn a field with sharp spatial edges (its weights must grow large, and Adam
  moves them about ``lr`` per step); the features give it those frequencies at init.
* ``time_cnn``: FFJORD's image field, 3x3 convolutions with time appended to every
  layer's input as a constant channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flowspec.errors import ShapeError
from flowspec.nets.base import NETS, context_as_channels, context_channel_count
from flowspec.registry import params_schema

SMOOTH_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU, "silu": nn.SiLU,
}


def time_column(t: torch.Tensor | float | None, like: torch.Tensor) -> torch.Tensor:
    """``t`` as a ``[B, 1]`` column of ``like``'s dtype and device."""
    if t is None:
        t = 0.0
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1).expand(like.shape[0], 1)


def time_features(t: torch.Tensor, n: int) -> torch.Tensor:
    """``[t, sin(2^k π t), cos(2^k π t) for k < n]`` of a ``[B, 1]`` time column."""
    if n == 0:
        return t
    freq = math.pi * 2.0 ** torch.arange(n, dtype=t.dtype, device=t.device)
    return torch.cat([t, torch.sin(t * freq), torch.cos(t * freq)], 1)


class _ConcatSquash(nn.Module):
    """``(W h + b) · sigmoid(a t + c) + d t`` (Grathwohl et al. 2019)."""

    def __init__(self, d_in: int, d_out: int, d_t: int = 1):
        super().__init__()
        self.layer = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(d_t, d_out)
        self.shift = nn.Linear(d_t, d_out, bias=False)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.layer(h) * torch.sigmoid(self.gate(t)) + self.shift(t)


class _Concat(nn.Module):
    """``W [h, t] + b``."""

    def __init__(self, d_in: int, d_out: int, d_t: int = 1):
        super().__init__()
        self.layer = nn.Linear(d_in + d_t, d_out)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.cat([h, t], 1))


@NETS.register(
    "time_mlp",
    schema=params_schema(
        hidden={"type": "array", "items": {"type": "integer", "minimum": 1},
                "default": [64, 64, 64], "description": "width of each hidden layer"},
        activation={"enum": list(SMOOTH_ACTIVATIONS), "default": "tanh",
                    "description": "a smooth nonlinearity (the ODE solver needs a smooth field)"},
        time={"enum": ["concatsquash", "concat"], "default": "concatsquash",
              "description": "how t enters every layer: scale and shift, or an extra input"},
        time_features={"type": "integer", "minimum": 0, "default": 0,
                       "description": "0: t alone; n: t with sin/cos(2^k π t), k < n "
                                      "(Fourier features for fields that change fast in t)"},
        space_features={"type": "integer", "minimum": 0, "default": 0,
                        "description": "0: z alone; n: z with n random Fourier features "
                                       "sin/cos(2π B z), B ~ N(0, space_scale²) fixed "
                                       "(for fields with sharp spatial edges)"},
        space_scale={"type": "number", "exclusiveMinimum": 0, "default": 1.0,
                     "description": "standard deviation of the random frequencies B, in "
                                    "cycles per unit of z (larger: sharper features)"},
    ),
    category="time",
    examples=[
        {"in_shape": [2], "out_shape": [2], "params": {"hidden": [8]}},
        {"in_shape": [3], "out_shape": [3], "context_shape": [2],
         "params": {"hidden": [8, 8], "time": "concat", "activation": "softplus"}},
        {"in_shape": [2], "out_shape": [2], "params": {"hidden": [8], "time_features": 3}},
        {"in_shape": [2], "out_shape": [2],
         "params": {"hidden": [8], "space_features": 4, "space_scale": 0.5}},
    ],
)
class TimeMLP(nn.Module):
    """MLP ``f(z, t[, context])`` with time in every layer: FFJORD's 2-D vector field.

    The context, if any, is concatenated to the input.
    """

    takes_time = True

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 context_shape: tuple[int, ...] | None = None, *,
                 hidden: Sequence[int] = (64, 64, 64), activation: str = "tanh",
                 time: str = "concatsquash", time_features: int = 0,
                 space_features: int = 0, space_scale: float = 1.0):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.time_features = int(time_features)
        layer = _ConcatSquash if time == "concatsquash" else _Concat
        d_z = math.prod(in_shape)
        # A buffer: saved with the weights, so a loaded field sees the same features
        # (None when unused, so checkpoints without features load unchanged).
        self.register_buffer("frequencies", torch.randn(d_z, int(space_features))
                             * (2 * math.pi * space_scale) if space_features else None)
        d_in = d_z + 2 * int(space_features) + (math.prod(context_shape) if context_shape else 0)
        widths = [d_in, *[int(w) for w in hidden], math.prod(out_shape)]
        d_t = 1 + 2 * self.time_features
        self.layers = nn.ModuleList(layer(a, b, d_t) for a, b in zip(widths[:-1], widths[1:]))
        self.act = SMOOTH_ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                t: torch.Tensor | float | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        if self.frequencies is not None:
            angles = h @ self.frequencies.to(h.dtype)
            h = torch.cat([h, torch.sin(angles), torch.cos(angles)], 1)
        if context is not None:
            h = torch.cat([h, context.reshape(context.shape[0], -1).to(h.dtype)], 1)
        tc = time_features(time_column(t, h), self.time_features)
        for i, layer in enumerate(self.layers):
            h = layer(h, tc)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h.reshape(x.shape[0], *self.out_shape)


@NETS.register(
    "time_cnn",
    schema=params_schema(
        width={"type": "integer", "minimum": 1, "default": 64, "description": "feature maps"},
        layers={"type": "integer", "minimum": 1, "default": 3,
                "description": "hidden 3x3 convolutions (FFJORD's MNIST field: 64 x 3)"},
        activation={"enum": list(SMOOTH_ACTIVATIONS), "default": "softplus"},
    ),
    category="time",
    examples=[
        {"in_shape": [1, 4, 4], "out_shape": [1, 4, 4], "params": {"width": 4, "layers": 1}},
        {"in_shape": [2, 3, 3], "out_shape": [2, 3, 3], "context_shape": [2],
         "params": {"width": 3, "layers": 2, "activation": "tanh"}},
    ],
)
class TimeCNN(nn.Module):
    """Convolutional field ``f(z, t[, context])``: 3x3 convolutions on ``[z, t]`` channels.

    Time (and the context, if any) is appended as constant channels to every layer's input.
    """

    takes_time = True

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 context_shape: tuple[int, ...] | None = None, *,
                 width: int = 64, layers: int = 3, activation: str = "softplus"):
        super().__init__()
        self.check_shapes(in_shape, out_shape)
        c_in = in_shape[0] + context_channel_count(context_shape, tuple(in_shape[1:]))
        widths = [c_in, *[width] * layers, out_shape[0]]
        self.convs = nn.ModuleList(nn.Conv2d(a + 1, b, 3, padding=1)
                                   for a, b in zip(widths[:-1], widths[1:]))
        self.act = SMOOTH_ACTIVATIONS[activation]()

    @classmethod
    def check_shapes(cls, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if len(in_shape) != 3 or len(out_shape) != 3 or tuple(in_shape[1:]) != tuple(out_shape[1:]):
            raise ShapeError(f"time_cnn maps images [C, H, W] to images of the same size, "
                             f"got {list(in_shape)} -> {list(out_shape)}")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                t: torch.Tensor | float | None = None) -> torch.Tensor:
        h = context_as_channels(x, context)
        b, _, hh, ww = h.shape
        tc = time_column(t, h).reshape(b, 1, 1, 1).expand(b, 1, hh, ww)
        for i, conv in enumerate(self.convs):
            h = conv(torch.cat([h, tc], 1))
            if i < len(self.convs) - 1:
                h = self.act(h)
        return h
