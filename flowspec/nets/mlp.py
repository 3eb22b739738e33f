"""A fully connected conditioner: the default net of couplings on vectors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flowspec.nets.base import NETS
from flowspec.registry import params_schema

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


@NETS.register(
    "mlp",
    schema=params_schema(
        hidden={"type": "array", "items": {"type": "integer", "minimum": 1},
                "default": [256, 256], "description": "width of each hidden layer"},
        activation={"enum": list(ACTIVATIONS), "default": "relu",
                    "description": "nonlinearity after every hidden layer"},
        zero_init={"type": "boolean", "default": True,
                   "description": "zero the last layer, so a coupling starts as the identity"},
    ),
    category="dense",
    examples=[
        {"in_shape": [3], "out_shape": [4], "params": {"hidden": [8]}},
        {"in_shape": [2, 3, 3], "out_shape": [4, 3, 3], "context_shape": [5],
         "params": {"hidden": [8, 8], "activation": "tanh"}},
        {"in_shape": [2], "out_shape": [3], "params": {"hidden": [], "zero_init": False}},
    ],
)
class MLP(nn.Module):
    """Multi-layer perceptron on the flattened input (and flattened context), reshaped
    to the output shape: NICE's and RealNVP's coupling net for vector data.

    The context, if any, is concatenated to the input. With ``zero_init`` the
    last layer starts at zero, so the coupling around it starts as the identity.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        zero_init: bool = True,
    ):
        super().__init__()
        self.out_shape = tuple(out_shape)
        d_in = math.prod(in_shape) + (math.prod(context_shape) if context_shape else 0)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(d_in, int(width)), ACTIVATIONS[activation]()]
            d_in = int(width)
        last = nn.Linear(d_in, math.prod(out_shape))
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        if context is not None:
            h = torch.cat([h, context.reshape(context.shape[0], -1).to(h.dtype)], 1)
        return self.net(h).reshape(x.shape[0], *self.out_shape)
