"""Lipschitz-constrained nets: the residual branch ``g`` of a ``residual`` node.

A residual map ``x + g(x)`` is invertible when ``Lip(g) < 1`` (Behrmann et al. 2019,
"Invertible Residual Networks"). These nets keep every linear map's spectral norm
at most a coefficient ``c < 1`` (spectral normalisation by power iteration, Miyato
et al. 2018) and use 1-Lipschitz activations (LipSwish, Chen et al. 2019), so the
whole net is ``c^L``-Lipschitz in its input with ``L`` linear maps.

The coefficient belongs to the ``residual`` node (its ``lipschitz`` parameter),
which calls :meth:`LipschitzNet.set_lipschitz`; a net without that method cannot
be used inside ``residual``. Until it is called the coefficient is 0.97.

Power iteration. Each weight keeps its singular-vector estimates ``u``, ``v`` as
buffers (they are in the checkpoint). They are advanced ``power_iterations``
times whenever the weight differs from the one they were last advanced for (an
optimiser step, a loaded checkpoint -- compared by value, since fused optimisers
do not bump tensor versions), and at construction 50 times; between changes the
map is deterministic, so ``forward`` and ``inverse`` see the same function. The estimate
``σ = uᵀWv`` is differentiated through ``W`` (u, v fixed), as in Miyato et al.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.errors import ShapeError
from flowspec.nets.base import NETS, context_as_channels, context_channel_count
from flowspec.registry import params_schema

#: spectral-norm coefficient used until the residual node sets its own
DEFAULT_LIPSCHITZ = 0.97
_INIT_ITERATIONS = 50


class LipSwish(nn.Module):
    """``x·sigmoid(βx) / 1.1``: Swish rescaled to be 1-Lipschitz for every β > 0
    (Chen et al. 2019), with a learned β = softplus(β_raw)."""

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * F.softplus(self.beta)) / 1.1


def _normalize(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm().clamp_min(torch.finfo(t.dtype).tiny)


class _SpectralNorm(nn.Module):
    """Shared power-iteration state: ``u`` (output side), ``v`` (input side) buffers."""

    coeff: float = DEFAULT_LIPSCHITZ

    def _setup(self, u_shape: tuple[int, ...], v_shape: tuple[int, ...], iterations: int):
        self.power_iterations = iterations
        self.register_buffer("u", _normalize(torch.randn(u_shape)))
        self.register_buffer("v", _normalize(torch.randn(v_shape)))
        # the weight u, v were last advanced for (not saved: a loaded weight re-advances)
        self.register_buffer("seen_weight", torch.empty(0), persistent=False)
        self.power_iterate(_INIT_ITERATIONS)

    def _op(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _op_t(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def power_iterate(self, n: int) -> None:
        """Advance the singular-vector estimates ``n`` times (in place: they are buffers)."""
        u, v = self.u, self.v
        for _ in range(n):
            v = _normalize(self._op_t(u))
            u = _normalize(self._op(v))
        self.u.copy_(u)
        self.v.copy_(v)
        self.seen_weight = self.weight.detach().clone()

    def sigma(self) -> torch.Tensor:
        """The spectral-norm estimate ``uᵀ W v``, advancing ``u, v`` if ``W`` changed."""
        w = self.weight
        if self.seen_weight.shape != w.shape or not torch.equal(self.seen_weight, w.detach()):
            self.power_iterate(self.power_iterations)
        return (self.u * self._op(self.v)).sum()

    def scale(self) -> torch.Tensor:
        """``1 / max(1, σ / c)``: divides the weight so its spectral norm is at most ``c``."""
        return 1.0 / torch.clamp(self.sigma() / self.coeff, min=1.0)


class SNLinear(_SpectralNorm):
    """A linear layer whose weight is spectrally normalised to at most ``coeff``."""

    def __init__(self, d_in: int, d_out: int, iterations: int = 1):
        super().__init__()
        layer = nn.Linear(d_in, d_out)
        self.weight, self.bias = layer.weight, layer.bias
        self._setup((d_out,), (d_in,), iterations)

    def _op(self, v):
        return self.weight @ v

    def _op_t(self, u):
        return self.weight.t() @ u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale(), self.bias)


class SNConv2d(_SpectralNorm):
    """A 'same' convolution whose operator norm on ``[C, H, W]`` maps is at most ``coeff``
    (the power iteration runs on the convolution operator itself, not its kernel)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], kernel: int = 3,
                 iterations: int = 1):
        super().__init__()
        layer = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        self.weight, self.bias, self.padding = layer.weight, layer.bias, kernel // 2
        self._setup((1, c_out, *size), (1, c_in, *size), iterations)

    def _op(self, v):
        return F.conv2d(v, self.weight, padding=self.padding)

    def _op_t(self, u):
        return F.conv_transpose2d(u, self.weight, padding=self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale(), self.bias, padding=self.padding)


class LipschitzNet(nn.Module):
    """Base of the Lipschitz-constrained nets: ``set_lipschitz`` and the spectral norms."""

    def set_lipschitz(self, coeff: float) -> None:
        """Constrain every linear map to spectral norm ``<= coeff`` (so the net to ``coeff^L``)."""
        if not 0 < coeff < 1:
            raise ValueError(f"lipschitz must be in (0, 1), got {coeff}")
        for m in self.modules():
            if isinstance(m, _SpectralNorm):
                m.coeff = float(coeff)

    def spectral_layers(self) -> list[_SpectralNorm]:
        return [m for m in self.modules() if isinstance(m, _SpectralNorm)]


_ITER_SCHEMA = {"type": "integer", "minimum": 1, "default": 1,
                "description": "power iterations per weight change (1 as in Residual Flows)"}


@NETS.register(
    "lipschitz_mlp",
    schema=params_schema(
        hidden={"type": "array", "items": {"type": "integer", "minimum": 1},
                "default": [128, 128], "description": "width of each hidden layer"},
        power_iterations=_ITER_SCHEMA,
    ),
    category="lipschitz",
    examples=[
        {"in_shape": [3], "out_shape": [3], "params": {"hidden": [8]}},
        {"in_shape": [2], "out_shape": [2], "context_shape": [3],
         "params": {"hidden": [8, 8], "power_iterations": 2}},
    ],
)
class LipschitzMLP(LipschitzNet):
    """MLP with spectrally normalised linear layers and LipSwish: the vector net of
    ``residual`` (Residual Flows' 2-D and tabular setup).

    A context is concatenated to the input; the constraint then bounds the net's
    Lipschitz constant in the input for every context.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 context_shape: tuple[int, ...] | None = None, *,
                 hidden: Sequence[int] = (128, 128), power_iterations: int = 1):
        super().__init__()
        self.out_shape = tuple(out_shape)
        d_in = math.prod(in_shape) + (math.prod(context_shape) if context_shape else 0)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [SNLinear(d_in, int(width), power_iterations), LipSwish()]
            d_in = int(width)
        layers.append(SNLinear(d_in, math.prod(out_shape), power_iterations))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        if context is not None:
            h = torch.cat([h, context.reshape(context.shape[0], -1).to(h.dtype)], 1)
        return self.net(h).reshape(x.shape[0], *self.out_shape)


@NETS.register(
    "lipschitz_cnn",
    schema=params_schema(
        width={"type": "integer", "minimum": 1, "default": 64, "description": "feature maps"},
        layers={"type": "integer", "minimum": 0, "default": 1,
                "description": "hidden 3x3 convolutions between the input and output ones"},
        power_iterations=_ITER_SCHEMA,
    ),
    category="lipschitz",
    examples=[
        {"in_shape": [2, 4, 4], "out_shape": [2, 4, 4], "params": {"width": 4}},
        {"in_shape": [1, 3, 3], "out_shape": [1, 3, 3], "context_shape": [2],
         "params": {"width": 3, "layers": 0}},
    ],
)
class LipschitzCNN(LipschitzNet):
    """3x3 conv → LipSwish → (1x1 conv → LipSwish) × layers → 3x3 conv, every convolution
    spectrally normalised as an operator: the image net of ``residual`` (Residual
    Flows' block, ``3-1-3``). A context is appended as channels."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 context_shape: tuple[int, ...] | None = None, *,
                 width: int = 64, layers: int = 1, power_iterations: int = 1):
        super().__init__()
        self.check_shapes(in_shape, out_shape)
        c_in, h, w = in_shape
        c_in += context_channel_count(context_shape, (h, w))
        mods: list[nn.Module] = [SNConv2d(c_in, width, (h, w), 3, power_iterations), LipSwish()]
        for _ in range(layers):
            mods += [SNConv2d(width, width, (h, w), 1, power_iterations), LipSwish()]
        mods.append(SNConv2d(width, out_shape[0], (h, w), 3, power_iterations))
        self.net = nn.Sequential(*mods)

    @classmethod
    def check_shapes(cls, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if len(in_shape) != 3 or len(out_shape) != 3 or tuple(in_shape[1:]) != tuple(out_shape[1:]):
            raise ShapeError(f"lipschitz_cnn maps images [C, H, W] to images of the same size, "
                             f"got {list(in_shape)} -> {list(out_shape)}")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(context_as_channels(x, context))
