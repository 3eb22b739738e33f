"""Coupling layers (NICE, RealNVP, Glow): half the tensor conditions a cheap
elementwise map of the other half, so the inverse and log-det are closed-form."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.autocast import run_fp32
from flowspec.bijectors.base import NODES, Bijector, Shape, batch_zeros
from flowspec.bijectors.masks import MASK_SCHEMA, PARITY_SCHEMA, Partition, mask_shapes
from flowspec.errors import UnknownNameError
from flowspec.nets import NETS, build_net
from flowspec.registry import params_schema, ref, split_named

#: floor of the sigmoid scale: its inverse multiplies by at most 1 / 1e-3 = 1000.
SIGMOID_MIN_LOG_SCALE = math.log(1e-3)

#: conditioner used when ``net`` is null, by the rank of what the conditioner sees.
VECTOR_NET: dict[str, Any] = {"mlp": {"hidden": [256, 256]}}
IMAGE_NET: dict[str, Any] = {"resnet": {"blocks": 4, "width": 64}}

NET_SCHEMA = {
    "anyOf": [ref("net"), {"type": "null"}],
    "default": None,
    "description": "conditioner net (null: {mlp: {hidden: [256, 256]}} on vectors, "
    "{resnet: {blocks: 4, width: 64}} on images [C, H, W])",
}


def default_net(kept_shape: Shape) -> dict[str, Any]:
    """The conditioner a coupling uses when its ``net`` is null."""
    return IMAGE_NET if len(kept_shape) == 3 else VECTOR_NET


def check_net(net: Any, in_shape: Shape, out_shape: Shape) -> None:
    """Let the net reject shapes it cannot map (``check_shapes`` classmethod, if it has one).

    Unknown or malformed net specs are left to schema validation, which reports them.
    """
    try:
        name, _ = split_named(net if net is not None else default_net(in_shape))
        cls = NETS.get(name).obj
    except (ValueError, UnknownNameError):
        return
    check = getattr(cls, "check_shapes", None)
    if check is not None:
        check(tuple(in_shape), tuple(out_shape))


class Coupling(Bijector):
    """Shared machinery: split by a mask, predict ``n_params`` numbers per transformed
    entry from the kept part (and the context), apply :meth:`elementwise`, merge."""

    #: numbers the conditioner predicts per transformed entry
    n_params: int = 1

    def __init__(self, in_shape: Shape, context_shape: Shape | None, mask: str, parity: int,
                 net: Any, n_params: int):
        super().__init__(in_shape, context_shape)
        self.n_params = n_params
        self.partition = Partition(in_shape, mask, parity)
        kept, part = self.partition.kept_shape, self.partition.part_shape
        net_out = (n_params * part[0], *part[1:])
        check_net(net, kept, net_out)
        self.net = build_net(net if net is not None else default_net(kept), kept, net_out,
                             context_shape)

    @classmethod
    def _check(cls, in_shape: Shape, mask: str, parity: int, net: Any, n_params: int) -> Shape:
        kept, part = mask_shapes(in_shape, mask, parity)
        check_net(net, kept, (n_params * part[0], *part[1:]))
        return tuple(in_shape)

    def elementwise(self, part: torch.Tensor, h: torch.Tensor, inverse: bool):
        """``(out, elementwise log-det or None)`` of the transformed part; ``h[:, k]`` is
        the k-th predicted parameter, shaped like ``part``."""
        raise NotImplementedError

    def _run(self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool):
        kept, part = self.partition.split(x)
        h = self.net(kept, context if self.context_shape is not None else None)
        # A channels_last conditioner hands back channels_last h: make it match the
        # (contiguous) data so the elementwise maps and their gradients stay on fast paths.
        h = h.contiguous().reshape(h.shape[0], self.n_params, *self.partition.part_shape)
        # The net is the cost; the elementwise map and its log-det stay fp32 under autocast.
        out, ld = run_fp32(self.elementwise, part, h, inverse)
        y = self.partition.merge(kept, out)
        return y, batch_zeros(x) if ld is None else self.partition.reduce(ld)

    def forward(self, x, context=None):
        return self._run(x, context, inverse=False)

    def inverse(self, y, context=None):
        return self._run(y, context, inverse=True)

    def rebuild(self, y: torch.Tensor, context: torch.Tensor | None = None):
        """Invertible backprop (flowspec/memory.py): the input of output ``y`` and the
        forward map recomputed on it with autograd, in ONE conditioner pass -- the kept
        part passes unchanged, so ``net(kept)`` serves the inverse and the forward alike.
        Returns ``(leaves, x, y, logdet, grad_x)``: ``grad_x`` joins the leaves' grads."""
        kept, part = self.partition.split(y)
        kept = kept.detach().requires_grad_(True)
        h = self.net(kept, context if self.context_shape is not None else None)
        h = h.contiguous().reshape(h.shape[0], self.n_params, *self.partition.part_shape)
        with torch.no_grad():
            x_part, _ = run_fp32(self.elementwise, part, h, True)
        x_part = x_part.detach().requires_grad_(True)
        out, ld = run_fp32(self.elementwise, x_part, h, False)
        y2 = self.partition.merge(kept, out)
        ld2 = batch_zeros(y) if ld is None else self.partition.reduce(ld)
        x = self.partition.merge(kept.detach(), x_part.detach())
        return [kept, x_part], x, y2, ld2, lambda g: self.partition.merge(g[0], g[1])


def _small_mlp(**extra: Any) -> dict[str, Any]:
    return {"mlp": {"hidden": [8], "zero_init": False, **extra}}


_SMALL_RESNET = {"resnet": {"blocks": 1, "width": 4}}


@NODES.register(
    "additive_coupling",
    schema=params_schema(mask=MASK_SCHEMA, parity=PARITY_SCHEMA, net=NET_SCHEMA),
    category="coupling",
    examples=[
        {"in_shape": [4], "params": {"net": _small_mlp()}},
        {"in_shape": [5], "params": {"mask": "alternate", "parity": 1, "net": _small_mlp()}},
        {"in_shape": [3], "context_shape": [2], "params": {"parity": 1, "net": _small_mlp()}},
        {"in_shape": [2, 3, 3], "params": {"mask": "checkerboard", "net": _SMALL_RESNET}},
        {"in_shape": [3, 2, 2], "params": {"mask": "channel", "parity": 1}},
    ],
)
class AdditiveCoupling(Coupling):
    """NICE's additive coupling: ``y_b = x_b + m(x_a)``, volume-preserving (log-det 0).

    ``x_a`` (kept) and ``x_b`` (transformed) are chosen by ``mask`` and ``parity``;
    alternate ``parity`` between layers so every entry gets transformed.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None):
        super().__init__(in_shape, context_shape, mask, parity, net, n_params=1)

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, **_):
        return cls._check(in_shape, mask, parity, net, 1)

    def elementwise(self, part, h, inverse):
        return (part - h[:, 0] if inverse else part + h[:, 0]), None


@NODES.register(
    "affine_coupling",
    schema=params_schema(
        mask=MASK_SCHEMA,
        parity=PARITY_SCHEMA,
        net=NET_SCHEMA,
        scale={"enum": ["tanh", "sigmoid", "exp"], "default": "tanh",
               "description": "tanh: s = a * tanh(h) with a learned per channel (RealNVP); "
               "sigmoid: multiplier sigmoid(h + 2), floored at 1e-3 (Glow); exp: unbounded exp(h) "
               "(unstable)"},
    ),
    category="coupling",
    examples=[
        {"in_shape": [4], "params": {"net": _small_mlp()}},
        {"in_shape": [5], "params": {"mask": "alternate", "parity": 1, "scale": "sigmoid",
                                     "net": _small_mlp(activation="tanh")}},
        {"in_shape": [3], "context_shape": [2], "params": {"scale": "exp", "net": _small_mlp()}},
        {"in_shape": [2, 3, 3], "params": {"mask": "checkerboard", "net": _SMALL_RESNET}},
        {"in_shape": [4, 2, 2], "context_shape": [3],
         "params": {"mask": "channel", "parity": 1, "scale": "sigmoid", "net": _SMALL_RESNET}},
        {"in_shape": [1, 2, 3], "params": {"mask": "checkerboard", "parity": 1}},
    ],
)
class AffineCoupling(Coupling):
    """Affine coupling (RealNVP, Glow): ``y_b = x_b * scale(x_a) + shift(x_a)``, log-det
    ``sum log scale``; the bounded scales keep deep stacks stable.

    ``tanh`` (RealNVP): log-scale ``a * tanh(h)`` with ``a`` learned per channel
    (feature for vectors), then ``y = x * exp(s) + t``. ``sigmoid`` (Glow):
    ``y = (x + t) * max(sigmoid(h + 2), 1e-3)``; the floor bounds the inverse's
    expansion (see :meth:`elementwise`). ``exp``: log-scale ``h``, unbounded. The
    default conditioners start at zero, so the tanh and exp forms start as the
    identity and the sigmoid form as a scaling by sigmoid(2).
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None, scale: str = "tanh"):
        super().__init__(in_shape, context_shape, mask, parity, net, n_params=2)
        if scale not in ("tanh", "sigmoid", "exp"):
            raise ValueError(f"unknown scale '{scale}' (known: tanh, sigmoid, exp)")
        self.scale = scale
        if scale == "tanh":
            part = self.partition.part_shape
            self.scale_factor = nn.Parameter(torch.ones(part[0], *([1] * (len(part) - 1))))

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, **_):
        return cls._check(in_shape, mask, parity, net, 2)

    def elementwise(self, part, h, inverse):
        raw, shift = h.unbind(1)  # one gradient buffer in backward, not two
        if self.scale == "sigmoid":
            # Floored: 1 / sigmoid(h + 2) grows like exp(-h), and h grows with the
            # conditioner's input, so when sampling one out-of-range activation was
            # multiplied up exponentially, coupling after coupling, to inf (Glow samples
            # at T >= 0.7). The floor makes each inverse expand at most 1000x; training
            # data never reaches it (scales stay above ~0.02), so densities are unchanged.
            log_scale = F.logsigmoid(raw + 2.0).clamp_min(SIGMOID_MIN_LOG_SCALE)
            if inverse:
                return part * torch.exp(-log_scale) - shift, -log_scale
            return (part + shift) * torch.exp(log_scale), log_scale
        log_scale = self.scale_factor * torch.tanh(raw) if self.scale == "tanh" else raw
        if inverse:
            return (part - shift) * torch.exp(-log_scale), -log_scale
        return part * torch.exp(log_scale) + shift, log_scale
