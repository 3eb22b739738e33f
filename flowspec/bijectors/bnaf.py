"""Block neural autoregressive flow (De Cao, Aziz & Titov 2019, "Block Neural
Autoregressive Flow").

One monotone neural network per output dimension, all packed in block matrices:
a layer maps ``D·a_in`` units to ``D·a_out``, the block (i, j) connecting
dimension j's units to dimension i's. Blocks above the diagonal are zero
(autoregressive), diagonal blocks are ``exp(V)`` (positive), blocks below are
free; every row is weight-normalised (``w = e^g v/‖v‖``) as in the paper's code.
With increasing activations in between, output d is increasing in input d given
inputs < d, so the Jacobian is triangular and its diagonal is the product of
the diagonal blocks' Jacobians -- carried through the layers in log space as
``log ∂h_(d,i)/∂x_d`` (a log-sum-exp per linear layer).

A residual connection (``gated``: ``σ(s) F(x) + (1 - σ(s)) x``, or ``normal``:
``x + F(x)``) makes each coordinate map unbounded, so the node is a bijection
of R^D and sampling works; without one the image of a tanh network is bounded.

Data -> latent is the closed-form direction. Latent -> data is solved one
dimension at a time in autoregressive order with the shared monotone solver
(Newton uses the diagonal Jacobian the network already computes).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.planar import vector_dims
from flowspec.numerics import solve_monotone
from flowspec.registry import params_schema

_LEAK = 0.2


class _BlockLinear(nn.Module):
    """A masked, weight-normalised layer ``D·a_in -> D·a_out`` with positive diagonal blocks."""

    def __init__(self, dims: int, a_in: int, a_out: int):
        super().__init__()
        self.dims, self.a_in, self.a_out = dims, a_in, a_out
        rows, cols = dims * a_out, dims * a_in
        block_r = torch.arange(rows) // a_out
        block_c = torch.arange(cols) // a_in
        self.register_buffer("diag_mask", (block_r[:, None] == block_c[None, :]).float(),
                             persistent=False)
        self.register_buffer("lower_mask", (block_r[:, None] > block_c[None, :]).float(),
                             persistent=False)
        # Uniform init scaled by fan-in + fan-out of the used part of each row (Xavier-like).
        fan_in = ((block_r + 1) * a_in).float()[:, None]
        bound = torch.sqrt(6.0 / (fan_in + a_out))
        self.v = nn.Parameter((torch.rand(rows, cols) * 2 - 1) * bound)
        self.log_gain = nn.Parameter(torch.log(torch.rand(rows).clamp_min(1e-3)))
        self.bias = nn.Parameter((torch.rand(rows) * 2 - 1) / math.sqrt(rows))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight matrix and ``log`` of its diagonal blocks ``[D, a_out, a_in]``."""
        d, m = self.diag_mask.to(self.v.dtype), self.lower_mask.to(self.v.dtype)
        raw = torch.exp(self.v) * d + self.v * m
        log_norm = 0.5 * torch.log((raw * raw).sum(1, keepdim=True))
        w = raw * torch.exp(self.log_gain[:, None] - log_norm)
        log_w = (self.log_gain[:, None] + self.v - log_norm)
        log_w = log_w.view(self.dims, self.a_out, self.dims, self.a_in)
        log_diag = torch.diagonal(log_w, dim1=0, dim2=2).permute(2, 0, 1)
        return w, log_diag

    def forward(self, h: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``g``: ``log ∂h/∂x_d`` per block ``[B, D, a_in]`` -> the same after this layer."""
        w, log_diag = self.weights()
        out = h @ w.t() + self.bias
        g = torch.logsumexp(log_diag.unsqueeze(0) + g.unsqueeze(2), dim=-1)
        return out, g


def _activate(kind: str, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation and its log-derivative, both elementwise."""
    if kind == "tanh":
        # log(1 - tanh²(a)) = 2 (log 2 - a - softplus(-2a)), stable for large |a|.
        return torch.tanh(pre), 2 * (math.log(2.0) - pre - F.softplus(-2 * pre))
    log_slope = torch.full_like(pre, math.log(_LEAK)).masked_fill(pre > 0, 0.0)
    return F.leaky_relu(pre, _LEAK), log_slope


@NODES.register(
    "bnaf",
    schema=params_schema(
        hidden={"type": "integer", "minimum": 1, "default": 16,
                "description": "hidden units per input dimension (a block's width)"},
        layers={"type": "integer", "minimum": 1, "default": 2,
                "description": "hidden layers (linear maps: layers + 1)"},
        activation={"enum": ["tanh", "leaky_relu"], "default": "tanh"},
        residual={"enum": ["gated", "normal", None], "default": "gated",
                  "description": "gated: σ(s)F(x) + (1-σ(s))x; normal: x + F(x); null: F(x) "
                                   "(bounded image with tanh: cannot sample)"},
    ),
    category="autoregressive",
    examples=[
        {"in_shape": [2], "params": {"hidden": 4, "layers": 2}},
        {"in_shape": [3], "params": {"hidden": 3, "layers": 1, "residual": "normal"}},
        {"in_shape": [2], "params": {"hidden": 3, "layers": 2, "activation": "leaky_relu",
                                     "residual": None}},
    ],
)
class BNAF(Bijector):
    """Block neural autoregressive flow: a monotone neural net per dimension, in block matrices.

    Very expressive per node (a universal monotone transform per dimension, given the
    earlier ones); stack with ``permutation`` between nodes. Density evaluation is
    closed form; sampling solves one monotone 1-D equation per dimension in order.
    Tolerance: 1e-4 absolute in float32 (relative beyond ``|x| = 1``). A context,
    if the flow has one, is ignored.
    """

    analytic = "forward"
    tolerance = 1e-4

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 hidden: int = 16, layers: int = 2, activation: str = "tanh",
                 residual: str | None = "gated"):
        super().__init__(in_shape, context_shape)
        self.dims = vector_dims("bnaf", in_shape)
        self.activation, self.residual = activation, residual
        widths = [1] + [hidden] * layers + [1]
        self.linears = nn.ModuleList(
            _BlockLinear(self.dims, a, b) for a, b in zip(widths[:-1], widths[1:]))
        if residual == "gated":
            self.gate = nn.Parameter(torch.randn(()))

    @classmethod
    def out_shape(cls, in_shape, **params):
        vector_dims("bnaf", in_shape)
        return tuple(in_shape)

    def _map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y`` and ``log ∂y_d/∂x_d`` ``[B, D]``."""
        h, g = x, x.new_zeros(x.shape[0], self.dims, 1)
        for i, lin in enumerate(self.linears):
            h, g = lin(h, g)
            if i < len(self.linears) - 1:
                h, log_da = _activate(self.activation, h)
                g = g + log_da.view_as(g)
        return self._residual(x, h.view(-1, self.dims), g.squeeze(2))

    def _residual(self, x: torch.Tensor, f: torch.Tensor, log_df: torch.Tensor):
        """Combine the network ``f`` with its input; the log-derivative follows."""
        if self.residual == "gated":
            gate = torch.sigmoid(self.gate)
            return (gate * f + (1 - gate) * x,
                    F.softplus(log_df + self.gate) - F.softplus(self.gate))
        if self.residual == "normal":
            return x + f, F.softplus(log_df)
        return f, log_df

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data -> latent, closed form."""
        y, log_diag = self._map(x)
        return y, log_diag.sum(1)

    def _coordinate(self, x: torch.Tensor, d: int, weights: list[torch.Tensor]):
        """``x_d -> (y_d, ∂y_d/∂x_d)`` with ``x_<d`` fixed to ``x[:, :d]``.

        Only block row d of each layer depends on ``x_d``; what the earlier
        dimensions feed into it is computed once here, so each solver step costs
        one small ``a x a`` network instead of the whole flow.
        """
        h, offsets = x, []
        for i, (lin, w) in enumerate(zip(self.linears, weights)):
            rows = slice(d * lin.a_out, (d + 1) * lin.a_out)
            offsets.append(h[:, :d * lin.a_in] @ w[rows, :d * lin.a_in].t() + lin.bias[rows])
            if i < len(self.linears) - 1:
                h = _activate(self.activation, h @ w.t() + lin.bias)[0]
        blocks = [w[d * lin.a_out:(d + 1) * lin.a_out, d * lin.a_in:(d + 1) * lin.a_in].t()
                  for lin, w in zip(self.linears, weights)]

        def coord(xd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h, dh = xd[:, None], torch.ones_like(xd)[:, None]
            for i, (block, off) in enumerate(zip(blocks, offsets)):
                h, dh = h @ block + off, dh @ block
                if i < len(blocks) - 1:
                    h, log_da = _activate(self.activation, h)
                    dh = dh * torch.exp(log_da)
            y, log_dy = self._residual(xd, h[:, 0], torch.log(dh[:, 0]))
            return y, torch.exp(log_dy)

        return coord

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        """Latent -> data: solve ``y_d = F_d(x_<d, x_d)`` for ``x_d``, d = 1..D in order."""
        weights = [lin.weights()[0] for lin in self.linears]
        x = y.new_zeros(y.shape[0], self.dims)
        for d in range(self.dims):
            xd = solve_monotone(self._coordinate(x, d, weights), y[:, d])
            x = torch.cat([x[:, :d], xd[:, None], x[:, d + 1:]], 1)
        _, log_diag = self._map(x)
        return x, -log_diag.sum(1)
