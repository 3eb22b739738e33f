"""Coupling masks: which part of a tensor a coupling keeps and which part it transforms.

A coupling splits its input in two: the *kept* part passes unchanged and feeds
the conditioner; the *transformed* part is changed elementwise with parameters
the conditioner predicts. Four ways to split, all along the per-example shape:

* ``half`` -- first / second contiguous half of dim 0 (features of a vector,
  channels of an image); an odd size n splits as n // 2 and n - n // 2.
* ``alternate`` -- even / odd indices of dim 0 (NICE).
* ``channel`` -- ``half`` on an image ``[C, H, W]``, which needs C >= 2 (RealNVP, Glow).
* ``checkerboard`` -- a spatial checkerboard on ``[C, H, W]`` (RealNVP): the
  conditioner sees the full image with the transformed pixels zeroed.

``parity`` (taken mod 2) swaps the roles: parity 0 keeps the first part (first
half, even indices, the squares with ``h + w`` even) and transforms the second;
parity 1 keeps the second and transforms the first. On a vector ``[4]`` with
``mask: half``, parity 0 transforms ``x[2:]`` given ``x[:2]``; a ``repeat`` with
``parity: "${i}"`` alternates so every dimension is transformed.
"""

from __future__ import annotations

import torch
from torch import nn

from flowspec.errors import ShapeError

Shape = tuple[int, ...]
MASKS = ("half", "alternate", "checkerboard", "channel")

MASK_SCHEMA = {
    "enum": list(MASKS),
    "default": "half",
    "description": "half: first/second half of dim 0 (features or channels); alternate: "
    "even/odd indices of dim 0 (NICE); checkerboard: spatial checkerboard on [C, H, W]; "
    "channel: first/second half of the channels of [C, H, W]",
}
PARITY_SCHEMA = {
    "type": "integer",
    "default": 0,
    "description": "taken mod 2; 0 keeps the first part (first half, even indices, squares "
    "with h + w even) and transforms the second; 1 swaps them (write \"${i}\" in a repeat)",
}


def _part_sizes(n: int, mask: str) -> tuple[int, int]:
    """Sizes of (first, second) part of a dim of size ``n``."""
    if mask == "alternate":
        return (n + 1) // 2, n // 2
    return n // 2, n - n // 2


def mask_shapes(in_shape: Shape, mask: str, parity: int = 0) -> tuple[Shape, Shape]:
    """``(kept shape, transformed shape)`` of a mask on ``in_shape``; raises :class:`ShapeError`.

    For ``checkerboard`` both are the full shape: the parts are interleaved in space.
    """
    in_shape = tuple(int(d) for d in in_shape)
    if mask not in MASKS:
        raise ShapeError(f"unknown mask '{mask}' (known: {', '.join(MASKS)})")
    if not in_shape:
        raise ShapeError(f"{mask} mask needs at least one dimension to split")
    if mask in ("checkerboard", "channel") and len(in_shape) != 3:
        hint = "; use mask: half or alternate on vectors" if len(in_shape) == 1 else ""
        raise ShapeError(f"{mask} mask needs an image input [C, H, W]{hint}")
    if mask == "checkerboard":
        if in_shape[1] * in_shape[2] < 2:
            raise ShapeError("checkerboard mask needs at least 2 pixels (H * W >= 2)")
        return in_shape, in_shape
    if in_shape[0] < 2:
        what = "channels" if mask == "channel" else "entries along dim 0"
        raise ShapeError(f"{mask} mask needs at least 2 {what}, got {in_shape[0]}")
    first, second = _part_sizes(in_shape[0], mask)
    a, b = (first, *in_shape[1:]), (second, *in_shape[1:])
    return (a, b) if parity % 2 == 0 else (b, a)


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Inverse of ``x[:, 0::2], x[:, 1::2]`` (``even`` may be one longer than ``odd``)."""
    n = even.shape[1] + odd.shape[1]
    if odd.shape[1] < even.shape[1]:
        odd = torch.cat([odd, odd.new_zeros(odd.shape[0], 1, *odd.shape[2:])], 1)
    return torch.stack([even, odd], 2).reshape(even.shape[0], -1, *even.shape[2:])[:, :n]


class Partition(nn.Module):
    """Splits a batch into (kept, transformed) parts and merges them back.

    ``split(x) -> (kept, part)``; ``merge(kept, new_part) -> y``;
    ``reduce(elementwise_logdet) -> [batch]``. With ``checkerboard`` the kept
    tensor is ``x`` with the transformed pixels zeroed and ``part`` is all of
    ``x``; ``merge``/``reduce`` then take only the transformed pixels.
    """

    def __init__(self, in_shape: Shape, mask: str, parity: int = 0):
        super().__init__()
        self.kept_shape, self.part_shape = mask_shapes(in_shape, mask, parity)
        self.mask = mask
        self.swap = parity % 2 == 1
        self.masked = mask == "checkerboard"
        if self.masked:
            _, h, w = in_shape
            board = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0
            keep = ~board if self.swap else board
            self.register_buffer("keep", keep[None], persistent=False)
        else:
            self.first = _part_sizes(in_shape[0], mask)[0]

    def _parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "alternate":
            return x[:, 0::2], x[:, 1::2]
        return x[:, : self.first], x[:, self.first:]

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.masked:
            return torch.where(self.keep, x, torch.zeros((), dtype=x.dtype, device=x.device)), x
        a, b = self._parts(x)
        return (b, a) if self.swap else (a, b)

    def merge(self, kept: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        if self.masked:
            return torch.where(self.keep, kept, part)
        a, b = (part, kept) if self.swap else (kept, part)
        if self.mask == "alternate":
            return _interleave(a, b)
        return torch.cat([a, b], 1)

    def reduce(self, logdet: torch.Tensor) -> torch.Tensor:
        """Sum an elementwise log-det of the transformed part to ``[batch]``."""
        if self.masked:
            logdet = torch.where(self.keep, torch.zeros((), dtype=logdet.dtype,
                                                        device=logdet.device), logdet)
        return logdet.reshape(logdet.shape[0], -1).sum(1)
