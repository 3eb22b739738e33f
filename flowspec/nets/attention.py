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


def _small(layer: nn.Module, scale: float = 0.1) -> nn.Module:
    """``layer`` with its initial weights scaled down (Flow++'s ``init_scale=0.1`` on the
    gates): every residual block starts close to the identity."""
    with torch.no_grad():
        layer.weight.mul_(scale)
    return layer


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, -x])`` over channels: keeps both signs' information (PixelCNN++, Flow++)."""
    return F.elu(torch.cat([x, -x], 1))


class _ChannelNorm(nn.Module):
    """Layer norm over the channels of each position, with a gain and bias per channel."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class _GatedConv(nn.Module):
    """``LN(x + gate(nin(drop(celu(conv3x3(celu(x)))))))`` with ``celu`` = concat-ELU
    and ``gate(a, b) = a·sigmoid(b)``: Flow++'s gated residual convolution."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(2 * width, width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.gate = _small(nn.Conv2d(2 * width, 2 * width, 1))
        self.norm = _ChannelNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(concat_elu(self.conv(concat_elu(x))))
        return self.norm(x + F.glu(self.gate(h), dim=1))


class _GatedAttention(nn.Module):
    """``LN(x + gate(proj(drop(MHA(x + pos)))))`` over the H·W positions of each example:
    one projection to queries, keys and values, none after the heads but the gate."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.drop = nn.Dropout(dropout)
        self.gate = _small(nn.Linear(width, 2 * width))
        self.norm = _ChannelNorm(width)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = (x + pos).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(seq).reshape(b, h * w, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 1, 4)  # 3 x [B, heads, HW, C/heads]
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        out = F.glu(self.gate(self.drop(out)), dim=-1)
        return self.norm(x + out.transpose(1, 2).reshape(b, c, h, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.conv = _GatedConv(width, dropout)
        self.attn = _GatedAttention(width, heads, dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.attn(self.conv(x), pos)


@NETS.register(
    "attention",
    schema=params_schema(
        blocks={"type": "integer", "minimum": 0, "default": 4,
                "description": "blocks of (gated conv, gated self-attention); Flow++ used 10"},
        width={"type": "integer", "minimum": 1, "default": 96, "description": "feature maps"},
        heads={"type": "integer", "minimum": 1, "default": 4,
               "description": "attention heads (must divide width)"},
        dropout={"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0,
                 "description": "dropout inside every block while training (Flow++: 0.2 on "
                                "CIFAR-10)"},
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
    """Flow++'s conditioner for images, as its reference code: conv3x3 -> ``blocks`` x
    (gated residual conv with concat-ELU, layer norm, gated multi-head self-attention
    over all positions with a learned position embedding shared by the blocks, layer
    norm) -> conv3x3, same spatial size.

    Self-attention lets each predicted parameter depend on the whole kept part, at
    O((H·W)²) cost per block: use it after a squeeze or two. A context enters as extra
    input channels, as in ``resnet``.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 context_shape: tuple[int, ...] | None = None, *, blocks: int = 4,
                 width: int = 96, heads: int = 4, dropout: float = 0.0,
                 zero_init: bool = True):
        super().__init__()
        self.check_shapes(in_shape, out_shape)
        if width % heads:
            raise ShapeError(f"attention: heads ({heads}) must divide width ({width})")
        c_in = in_shape[0] + context_channel_count(context_shape, tuple(in_shape[1:]))
        self.inp = nn.Conv2d(c_in, width, 3, padding=1)
        self.pos = nn.Parameter(0.01 * torch.randn(1, width, *in_shape[1:]))
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(blocks))
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
        h = self.inp(context_as_channels(x, context))
        for block in self.blocks:
            h = block(h, self.pos)
        return self.out(h)
