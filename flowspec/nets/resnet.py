"""RealNVP's convolutional residual conditioner: the default net of couplings on images."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from flowspec.errors import ShapeError
from flowspec.nets.base import NETS, context_as_channels, context_channel_count
from flowspec.registry import params_schema


class _Block(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(conv(relu(x))))``."""

    def __init__(self, width: int, wrap):
        super().__init__()
        self.conv1 = wrap(nn.Conv2d(width, width, 3, padding=1))
        self.conv2 = wrap(nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


@NETS.register(
    "resnet",
    schema=params_schema(
        blocks={"type": "integer", "minimum": 0, "default": 4,
                "description": "residual blocks (RealNVP used 8 on CIFAR-10)"},
        width={"type": "integer", "minimum": 1, "default": 64, "description": "feature maps"},
        weight_norm={"type": "boolean", "default": True,
                     "description": "weight-normalise the convolutions (as RealNVP)"},
        zero_init={"type": "boolean", "default": True,
                   "description": "zero the last conv, so a coupling starts as the identity"},
    ),
    category="conv",
    examples=[
        {"in_shape": [2, 4, 4], "out_shape": [4, 4, 4], "params": {"blocks": 1, "width": 8}},
        {"in_shape": [3, 4, 4], "out_shape": [6, 4, 4], "context_shape": [2],
         "params": {"blocks": 2, "width": 8, "weight_norm": False}},
        {"in_shape": [1, 2, 2], "out_shape": [2, 2, 2], "context_shape": [3, 2, 2],
         "params": {"blocks": 0, "width": 4, "zero_init": False}},
    ],
)
class ResNet(nn.Module):
    """Convolutional residual net for images (RealNVP): conv3x3 -> residual blocks ->
    ReLU -> conv3x3, keeping the spatial size.

    RealNVP's batch norm inside the net is left out, so the net is a per-example
    function (a coupling stays one bijection per example and behaves the same in
    train and eval mode); weight norm is kept. A context enters as extra input
    channels (an image of the same size as is, anything else broadcast). Vectors
    are rejected: use ``mlp`` for them.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        *,
        blocks: int = 4,
        width: int = 64,
        weight_norm: bool = True,
        zero_init: bool = True,
    ):
        super().__init__()
        self.check_shapes(in_shape, out_shape)

        def wrap(conv: nn.Conv2d) -> nn.Module:
            return _weight_norm(conv) if weight_norm else conv

        c_in = in_shape[0] + context_channel_count(context_shape, tuple(in_shape[1:]))
        self.inp = wrap(nn.Conv2d(c_in, width, 3, padding=1))
        self.blocks = nn.Sequential(*[_Block(width, wrap) for _ in range(blocks)])
        last = nn.Conv2d(width, out_shape[0], 3, padding=1)
        if zero_init:  # a zero weight cannot be weight-normalised (0/0): leave it plain
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.out: nn.Module = last
        else:
            self.out = wrap(last)

    @classmethod
    def check_shapes(cls, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        """Raise :class:`ShapeError` unless both shapes are images of the same size."""
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise ShapeError(
                f"resnet maps images [C, H, W] to images; got {list(in_shape)} -> "
                f"{list(out_shape)} (use net: mlp for vectors)")
        if tuple(in_shape[1:]) != tuple(out_shape[1:]):
            raise ShapeError(f"resnet keeps the spatial size; got {list(in_shape)} -> "
                             f"{list(out_shape)}")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(self.inp(context_as_channels(x, context)))
        return self.out(torch.relu(h))
