"""Glow's coupling conditioner: three convolutions, the last zero-initialised."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowspec.errors import ShapeError
from flowspec.nets.actnorm import ActNormLayer
from flowspec.nets.base import NETS, context_as_channels, context_channel_count
from flowspec.registry import params_schema

#: Glow scales the zero conv's learned log-scale by this factor (its logscale_factor).
LOGSCALE_FACTOR = 3.0


class ZeroConv2d(nn.Module):
    """A conv whose weights and bias start at zero, times a learned ``exp(3 * logs)``.

    Starting at zero makes every coupling the identity at init (Glow's
    ``Conv2dZeros``); the per-channel log-scale lets the output grow quickly.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(c_out, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs * LOGSCALE_FACTOR)


class ZeroLinear(nn.Module):
    """The vector analogue of :class:`ZeroConv2d` (Glow's ``linear_zeros``)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.logs = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.exp(self.logs * LOGSCALE_FACTOR)


@NETS.register(
    "glow_cnn",
    schema=params_schema(
        width={"type": "integer", "minimum": 1, "default": 512,
               "description": "hidden channels"},
        zero_init={"type": "boolean", "default": True,
                   "description": "zero last conv so each coupling starts as the identity"},
        norm={"enum": ["none", "actnorm"], "default": "none",
              "description": "normalise hidden activations with actnorm (as Glow's code)"},
    ),
    category="conv",
    examples=[
        {"in_shape": [2, 4, 4], "out_shape": [4, 4, 4], "params": {"width": 8}},
        {"in_shape": [2, 4, 4], "out_shape": [4, 4, 4], "context_shape": [3],
         "params": {"width": 8, "norm": "actnorm"}},
    ],
)
class GlowCNN(nn.Module):
    """Glow's coupling net: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-initialised conv3x3.

    The zero last layer (with Glow's learned log-scale x3) makes every coupling
    start as the identity, which is what lets deep Glows train. A context (class
    one-hot or tensor) enters as extra input channels, broadcast over positions.
    Convs are zero-padded (Glow's extra edge-indicator channel is left out);
    ``norm: actnorm`` adds Glow's actnorm after the hidden convs, otherwise they
    carry plain biases.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        *,
        width: int = 512,
        zero_init: bool = True,
        norm: str = "none",
    ):
        super().__init__()
        self.check_shapes(in_shape, out_shape)
        c_in = in_shape[0] + context_channel_count(context_shape, tuple(in_shape[1:]))
        use_an = norm == "actnorm"
        layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1, bias=not use_an)]
        if use_an:
            layers.append(_NetActNorm(width, in_shape[1:]))
        # In-place ReLUs: the conv/actnorm output they overwrite is not saved for
        # backward, and skipping a fresh width x H x W buffer per layer is measurable.
        layers += [nn.ReLU(inplace=True), nn.Conv2d(width, width, 1, bias=not use_an)]
        if use_an:
            layers.append(_NetActNorm(width, in_shape[1:]))
        layers.append(nn.ReLU(inplace=True))
        if zero_init:
            layers.append(ZeroConv2d(width, out_shape[0]))
        else:
            layers.append(nn.Conv2d(width, out_shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    @classmethod
    def check_shapes(cls, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        """Raise :class:`ShapeError` unless both shapes are images of the same size."""
        if len(in_shape) != 3 or len(out_shape) != 3 or tuple(in_shape[1:]) != tuple(out_shape[1:]):
            raise ShapeError(
                f"glow_cnn maps an image [C, H, W] to an image of the same H, W; got "
                f"{list(in_shape)} -> {list(out_shape)} (use net: mlp for vectors)")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(context_as_channels(x, context))


class _NetActNorm(nn.Module):
    """ActNorm used as a plain normalisation layer inside a net (no log-det)."""

    def __init__(self, channels: int, spatial: Any):
        super().__init__()
        self.an = ActNormLayer(channels, tuple(spatial))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.an(x)
