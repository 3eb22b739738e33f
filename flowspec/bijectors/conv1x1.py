"""Invertible 1x1 convolution (Kingma & Dhariwal 2018): a learned channel permutation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.autocast import fp32_region
from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


def random_orthogonal(n: int, seed: int | None = None) -> torch.Tensor:
    """A random orthogonal ``n x n`` matrix (float64); ``seed`` makes it reproducible."""
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed))
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)


def _apply(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Multiply every position's channel vector (dim 1 of ``x``) by ``w``."""
    if x.dim() == 2:
        return F.linear(x, w)
    if x.dim() == 4:
        return F.conv2d(x, w[:, :, None, None])
    if x.dim() == 3:
        return F.conv1d(x, w[:, :, None])
    return F.linear(x.movedim(1, -1), w).movedim(-1, 1)


@NODES.register(
    "inv_conv1x1",
    schema=params_schema(
        lu={"type": "boolean", "default": True,
            "description": "LU-decomposed weight: O(C) log-det and cheap inverse"},
        seed={"type": ["integer", "null"], "default": None,
              "description": "seed of the random orthogonal init (null: torch's global RNG)"},
    ),
    category="linear",
    examples=[
        {"in_shape": [4, 3, 3], "params": {"lu": True, "seed": 0}},
        {"in_shape": [4, 3, 3], "params": {"lu": False, "seed": 1}},
        {"in_shape": [5], "params": {"lu": True}},
        {"in_shape": [3, 5], "params": {"lu": False}},
    ],
)
class InvConv1x1(Bijector):
    """Invertible 1x1 convolution: a learned linear mixing of channels at every position,
    Glow's generalisation of RealNVP's fixed channel permutations.

    With ``lu: true`` the weight is ``W = P L (U + diag(sign * exp(log_s)))`` (P and
    sign fixed), so log|det W| = sum(log_s); ``lu: false`` learns ``W`` directly and
    uses slogdet. Initialised to a random rotation. A vector input ``[D]`` gets a
    learned invertible linear map. In eval mode the weight and its inverse are
    cached until the parameters change, so repeated sampling does not re-invert.
    """

    def __init__(
        self,
        in_shape: Shape,
        context_shape: Shape | None = None,
        *,
        lu: bool = True,
        seed: int | None = None,
    ):
        super().__init__(in_shape, context_shape)
        self.out_shape(in_shape)
        c = in_shape[0]
        self.lu = bool(lu)
        self.positions = math.prod(in_shape[1:])
        dtype = torch.get_default_dtype()
        w0 = random_orthogonal(c, seed)
        if self.lu:
            p, low, up = torch.linalg.lu(w0)
            s = torch.diagonal(up)
            self.register_buffer("perm", p.to(dtype))
            self.register_buffer("sign_s", torch.sign(s).to(dtype))
            self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1).to(dtype),
                                 persistent=False)
            self.register_buffer("eye", torch.eye(c, dtype=dtype), persistent=False)
            self.lower = nn.Parameter(torch.tril(low, -1).to(dtype))
            self.upper = nn.Parameter(torch.triu(up, 1).to(dtype))
            self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dtype))
        else:
            self.weight = nn.Parameter(w0.to(dtype))
        #: set False to re-derive the weights on every call (benchmarks compare both).
        self.cache_inverse = True
        self._cache: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def out_shape(cls, in_shape, **params):
        if not in_shape or not all(isinstance(d, int) for d in in_shape):
            raise ShapeError("inv_conv1x1 takes one tensor [C, ...] (or a vector [D])")
        return tuple(in_shape)

    # -- weights -------------------------------------------------------------------
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, U + diag(s)) of the LU parameterisation."""
        low = self.lower * self.lower_mask + self.eye
        up = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return low, up

    def _weight(self) -> torch.Tensor:
        if self.lu:
            low, up = self._factors()
            return self.perm @ low @ up
        return self.weight

    def _logdet(self) -> torch.Tensor:
        """``log|det W|`` (per position)."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight)[1]

    def _inverse_weight(self) -> torch.Tensor:
        if self.lu:
            low, up = self._factors()
            inv_up = torch.linalg.solve_triangular(up, self.eye, upper=True)
            inv_low = torch.linalg.solve_triangular(low, self.eye, upper=False,
                                                    unitriangular=True)
            return inv_up @ inv_low @ self.perm.T
        return torch.linalg.inv(self.weight)

    def _cache_key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self.parameters())

    def _use_cache(self) -> bool:
        if torch.compiler.is_exporting():
            return True  # the weights of an exported graph are constants (see weights())
        # Under torch.compile the weights are derived inside the graph (a few small
        # matmuls/solves): the version-keyed cache would graph-break and recompile per node.
        if self.training or not self.cache_inverse or torch.compiler.is_compiling():
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W, W^-1, log|det W|)``; cached in eval mode, keyed on the parameters' versions."""
        if not self._use_cache():
            return self._weight(), self._inverse_weight(), self._logdet()
        if torch.compiler.is_exporting():
            # Triangular solves and inverses have no ONNX op: an exported graph takes the
            # weights an eager call of this eval-mode node cached -- the very numbers eager
            # evaluation uses (flowspec.export runs the flow once before tracing it).
            if self._cache is None:
                raise RuntimeError("inv_conv1x1: run the flow once in eval mode before export")
            return self._cache[1], self._cache[2], self._cache[3]
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._weight(), self._inverse_weight(), self._logdet())
        return self._cache[1], self._cache[2], self._cache[3]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    # -- maps ----------------------------------------------------------------------
    def forward(self, x, context=None):
        with fp32_region(x):  # W from its LU factors and log|det W| never in bf16
            if self._use_cache():
                w, _, ld = self.weights()
            else:
                w, ld = self._weight(), self._logdet()
        return _apply(x, w), (ld * self.positions).expand(x.shape[0])

    def inverse(self, y, context=None):
        with fp32_region(y):
            if self._use_cache():
                _, w_inv, ld = self.weights()
            else:
                w_inv, ld = self._inverse_weight(), self._logdet()
        return _apply(y, w_inv), (-ld * self.positions).expand(y.shape[0])
