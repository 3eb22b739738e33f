"""Coupling layers (NICE, RealNVP, Glow, neural spline flows): part of the tensor
conditions a monotone elementwise map (a transformer) of the rest, so the Jacobian
is triangular and the inverse needs only the transformer's inverse.

``coupling`` takes any transformer; ``additive_coupling``, ``affine_coupling`` and
``rq_spline_coupling`` are the classic pairs under their usual names."""

from __future__ import annotations

from typing import Any

import torch

from flowspec.autocast import run_fp32
from flowspec.bijectors.base import NODES, Bijector, Shape, batch_zeros
from flowspec.bijectors.masks import MASK_SCHEMA, PARITY_SCHEMA, Partition, mask_shapes
from flowspec.bijectors.spline import SPLINE_SCHEMA
from flowspec.bijectors.transformers import (
    AFFINE_SCALES,
    SIGMOID_MIN_LOG_SCALE,
    TRANSFORMER_SCHEMA,
    Transformer,
    build_transformer,
    transformer_count,
)
from flowspec.errors import UnknownNameError
from flowspec.nets import NETS, build_net
from flowspec.registry import params_schema, ref, split_named

__all__ = ["SIGMOID_MIN_LOG_SCALE", "Coupling", "AffineCoupling", "AdditiveCoupling",
           "RQSplineCoupling"]

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
    """Shared machinery: split by a mask, predict the transformer's ``P`` numbers per
    transformed entry from the kept part (and the context), apply the transformer, merge."""

    def __init__(self, in_shape: Shape, context_shape: Shape | None, mask: str, parity: int,
                 net: Any, transformer: Any):
        super().__init__(in_shape, context_shape)
        self.partition = Partition(in_shape, mask, parity)
        kept, part = self.partition.kept_shape, self.partition.part_shape
        self.transformer: Transformer = build_transformer(transformer, part)
        self.n_params = n_params = transformer_count(transformer)
        if not self.transformer.analytic_inverse:
            self.analytic = "forward"  # type: ignore[misc]
            self.tolerance = self.transformer.tolerance  # type: ignore[misc]
        net_out = (n_params * part[0], *part[1:])
        check_net(net, kept, net_out)
        self.net = build_net(net if net is not None else default_net(kept), kept, net_out,
                             context_shape)

    @classmethod
    def _check(cls, in_shape: Shape, mask: str, parity: int, net: Any, transformer: Any) -> Shape:
        n_params = transformer_count(transformer)
        kept, part = mask_shapes(in_shape, mask, parity)
        check_net(net, kept, (n_params * part[0], *part[1:]))
        return tuple(in_shape)

    def elementwise(self, part: torch.Tensor, h: torch.Tensor, inverse: bool):
        """``(out, elementwise log-det)`` of the transformed part; ``h[:, k]`` is
        the k-th predicted parameter, shaped like ``part``."""
        theta = h.movedim(1, -1)  # a view: the transformer reads parameters on the last dim
        if inverse:
            return self.transformer.inverse(part, theta)
        return self.transformer(part, theta)

    def _run(self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool):
        kept, part = self.partition.split(x)
        h = self.net(kept, context if self.context_shape is not None else None)
        # A channels_last conditioner hands back channels_last h: make it match the
        # (contiguous) data so the elementwise maps and their gradients stay on fast paths.
        h = h.contiguous().reshape(h.shape[0], self.n_params, *self.partition.part_shape)
        # The net is the cost; the elementwise map and its log-det stay fp32 under autocast.
        out, ld = run_fp32(self.elementwise, part, h, inverse)
        y = self.partition.merge(kept, out)
        return y, self.partition.reduce(ld)

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
    "coupling",
    schema=params_schema(mask=MASK_SCHEMA, parity=PARITY_SCHEMA, net=NET_SCHEMA,
                         transformer=TRANSFORMER_SCHEMA),
    category="coupling",
    examples=[
        {"in_shape": [4], "params": {"net": _small_mlp()}},
        {"in_shape": [3], "context_shape": [2],
         "params": {"parity": 1, "net": _small_mlp(), "transformer": "additive"}},
        {"in_shape": [4], "params": {"net": _small_mlp(),
                                     "transformer": {"affine": {"scale": "tanh"}}}},
        {"in_shape": [2, 3, 3], "params": {"mask": "checkerboard", "net": _SMALL_RESNET,
                                           "transformer": {"rq_spline": {"bins": 3}}}},
        {"in_shape": [3], "params": {"net": _small_mlp(),
                                     "transformer": {"circular_rq_spline": {"bins": 3}}}},
        {"in_shape": [4], "params": {"mask": "alternate", "net": _small_mlp(),
                                     "transformer": {"sos": {"polynomials": 2, "degree": 2}}}},
        {"in_shape": [3], "params": {"net": _small_mlp(),
                                     "transformer": {"bernstein": {"degree": 5}}}},
        {"in_shape": [3], "context_shape": [1],
         "params": {"net": _small_mlp(), "transformer": {"umnn": {"hidden": [6]}}}},
        {"in_shape": [4], "params": {"net": _small_mlp(), "transformer": {"dsf": {"units": 3}}}},
        {"in_shape": [3], "params": {"net": _small_mlp(),
                                     "transformer": {"ddsf": {"units": 3, "layers": 2}}}},
        {"in_shape": [2, 2, 4], "params": {  # Flow++'s coupling
            "mask": "checkerboard",
            "net": {"attention": {"blocks": 1, "width": 4, "heads": 2, "zero_init": False}},
            "transformer": {"logistic_mixture": {"components": 2}}}},
    ],
)
class GenericCoupling(Coupling):
    """Coupling with any transformer: the entries picked by ``mask``/``parity`` go
    through ``transformer`` (affine, additive, rq_spline, circular_rq_spline, sos,
    bernstein, umnn, dsf, ddsf), its parameters predicted by ``net`` from the rest.

    Alternate ``parity`` between layers so every entry gets transformed. With a
    numerically inverted transformer (sos, bernstein, umnn, dsf, ddsf) the density
    direction stays one pass and sampling solves each entry to the transformer's
    tolerance.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None,
                 transformer: Any = "affine"):
        super().__init__(in_shape, context_shape, mask, parity, net, transformer)

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, transformer="affine", **_):
        return cls._check(in_shape, mask, parity, net, transformer)


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
    alternate ``parity`` between layers so every entry gets transformed. Same as
    ``coupling`` with ``transformer: additive``.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None):
        super().__init__(in_shape, context_shape, mask, parity, net, "additive")

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, **_):
        return cls._check(in_shape, mask, parity, net, "additive")

    def _run(self, x, context, inverse):
        y, _ = super()._run(x, context, inverse)
        return y, x.new_zeros(x.shape[0])


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
    expansion. ``exp``: log-scale ``h``, unbounded. The default conditioners start at
    zero, so the tanh and exp forms start as the identity and the sigmoid form as a
    scaling by sigmoid(2). Same as ``coupling`` with ``transformer: {affine: {scale: ...}}``.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None, scale: str = "tanh"):
        if scale not in AFFINE_SCALES or scale == "soft":
            raise ValueError(f"unknown scale '{scale}' (known: tanh, sigmoid, exp)")
        super().__init__(in_shape, context_shape, mask, parity, net, {"affine": {"scale": scale}})
        self.scale = scale

    @property
    def scale_factor(self) -> torch.Tensor:
        """The learned per-channel bound of the tanh form's log-scale."""
        return self.transformer.scale_factor

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, **_):
        return cls._check(in_shape, mask, parity, net, "affine")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the transformers kept the factor on the node
        old = prefix + "scale_factor"
        if old in state_dict:
            state_dict[prefix + "transformer.scale_factor"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@NODES.register(
    "rq_spline_coupling",
    schema=params_schema(
        mask=MASK_SCHEMA,
        parity=PARITY_SCHEMA,
        net=NET_SCHEMA,
        **SPLINE_SCHEMA,
    ),
    category="coupling",
    examples=[
        {"in_shape": [4], "params": {"bins": 4, "net": {"mlp": {"hidden": [8]}}}},
        {"in_shape": [5], "context_shape": [2],
         "params": {"mask": "alternate", "parity": 1, "bins": 3, "bound": 2.0,
                    "net": {"mlp": {"hidden": [8], "zero_init": False}}}},
        {"in_shape": [2, 2, 3], "params": {"mask": "checkerboard", "bins": 2,
                                           "net": {"resnet": {"blocks": 1, "width": 4}}}},
        {"in_shape": [2], "params": {"bins": 2, "bound": 1.0, "net": {"mlp": {"hidden": [4]}}}},
        {"in_shape": [3], "params": {"bins": 3, "parametrization": "zuko",
                                     "net": {"mlp": {"hidden": [4], "zero_init": False}}}},
    ],
)
class RQSplineCoupling(Coupling):
    """Rational-quadratic spline coupling (Neural Spline Flows): a far more flexible
    elementwise map than affine, still with a closed-form inverse and log-det.

    Monotone RQ spline on ``[-bound, bound]`` with ``bins`` bins; identity
    (linear tails) outside. Bin widths and heights are at least 1e-3 of the
    interval and derivatives at least 1e-3. The derivatives are offset so a
    zero conditioner output is the identity map: with the default zero-initialised
    nets the coupling starts as the identity. Same as ``coupling`` with
    ``transformer: {rq_spline: {bins: ..., bound: ...}}``.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 mask: str = "half", parity: int = 0, net: Any = None, bins: int = 8,
                 bound: float = 3.0, parametrization: str = "durkan"):
        super().__init__(in_shape, context_shape, mask, parity, net,
                         {"rq_spline": {"bins": bins, "bound": bound,
                                        "parametrization": parametrization}})
        self.bins = int(bins)
        self.bound = float(bound)

    @classmethod
    def out_shape(cls, in_shape, mask="half", parity=0, net=None, bins=8, **_):
        return cls._check(in_shape, mask, parity, net, {"rq_spline": {"bins": bins}})
