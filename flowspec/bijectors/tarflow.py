"""Transformer autoregressive flow block (TarFlow; Zhai et al. 2024, "Normalizing Flows
are Capable Generative Models").

The image is cut into ``p x p`` patches, a sequence of T tokens of ``C p²`` numbers. A
causal transformer reads tokens ``< t`` (a learned start token stands before the first)
and predicts the transformer's numbers (affine by default: shift and log-scale) for
every entry of token ``t``, so the Jacobian is block-triangular. Data -> latent is one
transformer pass over the whole sequence; latent -> data runs T passes, each settling
one token (exact, not numerical, with a closed-form transformer). ``parity: ${i}``
reverses the token order every other block, as the paper alternates it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.transformers import (
    TRANSFORMER_SCHEMA,
    Transformer,
    build_transformer,
    transformer_count,
)
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


def _tokens(in_shape, patch: int) -> tuple[int, int]:
    """(T, token size) of an image cut into ``patch x patch`` patches."""
    if len(in_shape) != 3:
        raise ShapeError(f"tarflow needs an image [C, H, W], got {list(in_shape)}")
    c, h, w = in_shape
    if h % patch or w % patch:
        raise ShapeError(f"tarflow needs H and W divisible by patch = {patch}, got H={h}, W={w}")
    return (h // patch) * (w // patch), c * patch * patch


@NODES.register(
    "tarflow",
    schema=params_schema(
        patch={"type": "integer", "minimum": 1, "default": 4, "description": "patch side p"},
        width={"type": "integer", "minimum": 1, "default": 256,
               "description": "transformer width (must be divisible by heads)"},
        layers={"type": "integer", "minimum": 1, "default": 4,
                "description": "causal transformer layers"},
        heads={"type": "integer", "minimum": 1, "default": 4, "description": "attention heads"},
        parity={"type": "integer", "default": 0,
                "description": "taken mod 2; 1 reverses the token order (write \"${i}\" in a "
                "repeat to alternate, as TarFlow does)"},
        transformer=TRANSFORMER_SCHEMA,
    ),
    category="autoregressive",
    examples=[
        {"in_shape": [1, 4, 4], "params": {"patch": 2, "width": 8, "layers": 1, "heads": 2}},
        {"in_shape": [2, 2, 4], "params": {"patch": 2, "width": 4, "layers": 2, "heads": 1,
                                           "parity": 1, "transformer": "rq_spline"}},
    ],
)
class TarFlow(Bijector):
    """TarFlow block: a causal transformer over image patches predicts each patch's
    elementwise map from the patches before it (affine by default, as the paper).

    Density in one pass; sampling in T sequential passes (T = number of patches).
    The output layer starts at zero, so the block starts as the identity. The paper's
    noise augmentation and denoising step are options of the run (maximum_likelihood's
    ``noise``, ``sample.denoise``), not of the block. A context, if the
    flow has one, is ignored.
    """

    reconstruct = "checkpoint"  # sampling costs T passes: recompute from the input
    exports = "forward"
    export_note = ("its inverse runs one transformer pass per patch (T sequential passes); an "
                   "exported sampler would unroll them all: sample in PyTorch")

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *, patch: int = 4,
                 width: int = 256, layers: int = 4, heads: int = 4, parity: int = 0,
                 transformer: Any = "affine"):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape, patch=patch, width=width, heads=heads)
        self.patch, self.reverse = int(patch), int(parity) % 2 == 1
        self.n_tokens, self.token = _tokens(in_shape, self.patch)
        self.transformer: Transformer = build_transformer(transformer, ())
        self.n_params = transformer_count(transformer)
        if not self.transformer.analytic_inverse:
            self.analytic = "forward"  # type: ignore[misc]
            self.tolerance = self.transformer.tolerance  # type: ignore[misc]
        self.start = nn.Parameter(torch.zeros(1, 1, self.token))
        self.inp = nn.Linear(self.token, width)
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, self.token * self.n_params)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        mask = torch.triu(torch.full((self.n_tokens, self.n_tokens), float("-inf")), 1)
        self.register_buffer("causal", mask, persistent=False)

    @classmethod
    def out_shape(cls, in_shape, patch=4, width=256, heads=4, **_):
        _tokens(in_shape, patch)
        if width % heads:
            raise ShapeError(f"tarflow: heads ({heads}) must divide width ({width})")
        return tuple(in_shape)

    def _to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        t = t.reshape(b, self.n_tokens, self.token)
        return t.flip(1) if self.reverse else t

    def _from_tokens(self, t: torch.Tensor) -> torch.Tensor:
        c, h, w = self.in_shape  # type: ignore[misc]
        p = self.patch
        t = t.flip(1) if self.reverse else t
        x = t.reshape(t.shape[0], h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(t.shape[0], c, h, w)

    def _theta(self, tokens: torch.Tensor) -> torch.Tensor:
        """Numbers for every token from the tokens before it: ``[B, T, token, P]``."""
        shifted = torch.cat([self.start.to(tokens.dtype).expand(tokens.shape[0], -1, -1),
                             tokens[:, :-1]], 1)
        h = self.body(self.inp(shifted) + self.pos, mask=self.causal.to(tokens.dtype),
                      is_causal=True)
        return self.out(h).view(*tokens.shape, self.n_params)

    def forward(self, x, context=None):
        tokens = self._to_tokens(x)
        z, ld = self.transformer(tokens, self._theta(tokens))
        return self._from_tokens(z), ld.sum((1, 2))

    def inverse(self, y, context=None):
        z = self._to_tokens(y)
        x = torch.zeros_like(z)
        logdet = z.new_zeros(z.shape[0])
        for t in range(self.n_tokens):
            theta = self._theta(x)[:, t]
            xt, ld = self.transformer.inverse(z[:, t], theta)
            x = torch.cat([x[:, :t], xt[:, None], x[:, t + 1:]], 1)
            logdet = logdet + ld.sum(1)
        return self._from_tokens(x), logdet
