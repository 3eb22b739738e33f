"""Flow++'s conditioner (Ho et al. 2019): gated residual convolutions interleaved with
gated multi-head self-attention over the pixels, so every output position can read the
whole kept half of the image, not only a receptive field."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.errors import ShapeError
from flowspec.nets.base import NETS, context_as_channels, context_channel_count
from flowspec.registry import params_schema


class _GatedConv(nn.Module):
    """``x + GLU(conv(elu(conv(elu(x)))))``: Flow++'s gated residual convolution."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.gate = nn.Conv2d(width, 2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.glu(self.gate(F.elu(self.conv(F.elu(x)))), dim=1)


class _GatedAttention(nn.Module):
    """``x + GLU(proj(MHA(LN(x))))`` over the H·W positions (per example)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, width)  # a layer norm over channels and positions
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.gate = nn.Conv2d(width, 2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + F.glu(self.gate(out), dim=1)


@NETS.register(
    "attention",
    schema=params_schema(
        blocks={"type": "integer", "minimum": 0, "default": 4,
                "description": "blocks of (gated conv, gated self-attention); Flow++ used 10"},
        width={"type": "integer", "minimum": 1, "default": 96, "description": "feature maps"},
        heads={"type": "integer", "minimum": 1, "default": 4,
               "description": "attention heads (must divide width)"},
        zero_init={"type": "boolean", "default": True,
                   "description": "zero the last conv, so a coupling starts as the identity"},
    ),
    category="conv",
    examples=[
        {"in_shape": [2, 4, 4], "out_shape": [4, 4, 4], "params": {"blocks": 1, "width": 8,
                                                                  "heads": 2}},
        {"in_shape": [3, 2, 2], "out_shape": [6, 2, 2], "context_shape": [2],
         "params": {"blocks": 2, "width": 4, "heads": 1, "zero_init": False}},
    ],
)
class Attention(nn.Module):
    """Flow++'s conditioner for images: conv3x3 -> ``blocks`` x (gated residual conv,
    gated multi-head self-attention over all positions) -> conv3x3, same spatial size.

    Self-attention lets each predicted parameter depend on the whole kept part, at
    O((H·W)²) cost per block: use it after a squeeze or two. A context enters as extra
    input channels, as in ``resnet``.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 context_shape: tuple[int, ...] | None = None, *, blocks: int = 4,
                 width: int = 96, heads: int = 4, zero_init: bool = True):
        super().__init__()
        self.check_shapes(in_shape, out_shape)
        if width % heads:
            raise ShapeError(f"attention: heads ({heads}) must divide width ({width})")
        c_in = in_shape[0] + context_channel_count(context_shape, tuple(in_shape[1:]))
        self.inp = nn.Conv2d(c_in, width, 3, padding=1)
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [_GatedConv(width), _GatedAttention(width, heads)]
        self.blocks = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, out_shape[0], 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    @classmethod
    def check_shapes(cls, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if len(in_shape) != 3 or len(out_shape) != 3 or tuple(in_shape[1:]) != tuple(
                out_shape[1:]):
            raise ShapeError(f"attention maps an image [C, H, W] to an image of the same H, W; "
                             f"got {list(in_shape)} -> {list(out_shape)} (use mlp for vectors)")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(F.elu(self.blocks(self.inp(context_as_channels(x, context)))))
