"""Invertible downsampling, alternatives to ``squeeze``: the orthonormal Haar wavelet
transform and i-RevNet's space-to-depth ordering. Both map ``[C, H, W]`` to
``[4C, H/2, W/2]`` with log-det 0 (orthonormal / a permutation)."""

from __future__ import annotations

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape, batch_zeros
from flowspec.bijectors.reshape import _squeeze, _unsqueeze
from flowspec.errors import ShapeError
from flowspec.registry import params_schema

#: rows: low-pass (average), horizontal, vertical and diagonal details of a 2x2 block
#: ordered (0, 0), (0, 1), (1, 0), (1, 1); orthonormal.
_HAAR = 0.5 * torch.tensor([[1.0, 1.0, 1.0, 1.0],
                            [1.0, -1.0, 1.0, -1.0],
                            [1.0, 1.0, -1.0, -1.0],
                            [1.0, -1.0, -1.0, 1.0]], dtype=torch.float64)


class _Downsample2x(Bijector):
    """``[C, H, W] -> [4C, H/2, W/2]``, H and W even: the shape contract both share."""

    #: the node's name in messages
    kind = "downsampling"

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape)

    @classmethod
    def out_shape(cls, in_shape, **_):
        if len(in_shape) != 3:
            raise ShapeError(f"{cls.kind} needs an image [C, H, W], got {list(in_shape)}")
        c, h, w = in_shape
        if h % 2 or w % 2:
            raise ShapeError(f"{cls.kind} needs even H and W, got H={h}, W={w}")
        return (4 * c, h // 2, w // 2)


def _by_subpixel(x: torch.Tensor) -> torch.Tensor:
    """Squeezed ``[B, 4C, h, w]`` (channel-major) -> ``[B, C, 4, h, w]``."""
    b, c4, h, w = x.shape
    return x.reshape(b, c4 // 4, 4, h, w)


@NODES.register("haar", schema=params_schema(), category="reshape",
                examples=[{"in_shape": [1, 4, 2]}, {"in_shape": [2, 2, 4]}])
class Haar(_Downsample2x):
    """One level of the orthonormal 2-D Haar wavelet transform: ``[C, H, W] ->
    [4C, H/2, W/2]``, the first C channels the (scaled) 2x2 averages, then the
    horizontal, vertical and diagonal details (Wavelet Flow, SRFlow).

    An invertible alternative to ``squeeze`` that separates coarse content from
    detail, so a following ``split`` can factor out detail channels. Orthonormal:
    log-det 0.
    """

    kind = "haar"

    def forward(self, x, context=None):
        s = _by_subpixel(_squeeze(x, 2))
        bands = torch.einsum("ks,bcshw->bkchw", _HAAR.to(x), s)
        return bands.reshape(x.shape[0], -1, *bands.shape[-2:]), batch_zeros(x)

    def inverse(self, y, context=None):
        b, c4, h, w = y.shape
        bands = y.reshape(b, 4, c4 // 4, h, w)
        s = torch.einsum("ks,bkchw->bcshw", _HAAR.to(y), bands)
        return _unsqueeze(s.reshape(b, c4, h, w), 2), batch_zeros(y)


@NODES.register("irevnet_downsample", schema=params_schema(), category="reshape",
                examples=[{"in_shape": [1, 4, 2]}, {"in_shape": [3, 2, 2]}])
class IRevNetDownsample(_Downsample2x):
    """i-RevNet's invertible downsampling (Jacobsen et al. 2018): ``[C, H, W] ->
    [4C, H/2, W/2]`` with output channel ``(2i + j) C + c`` holding pixel
    ``(2y + i, 2x + j)`` of channel ``c``.

    The same pixels as ``squeeze``, ordered sub-pixel-major (each group of C channels
    is one sub-sampled copy of the image) instead of channel-major; a permutation, so
    log-det 0.
    """

    kind = "irevnet_downsample"

    def forward(self, x, context=None):
        s = _by_subpixel(_squeeze(x, 2)).transpose(1, 2)
        return s.reshape(x.shape[0], -1, *s.shape[-2:]), batch_zeros(x)

    def inverse(self, y, context=None):
        b, c4, h, w = y.shape
        s = y.reshape(b, 4, c4 // 4, h, w).transpose(1, 2).reshape(b, c4, h, w)
        return _unsqueeze(s, 2), batch_zeros(y)
