"""Masked autoregressive flows: MAF (Papamakarios et al. 2017), IAF (Kingma et al.
2016) and the autoregressive rational-quadratic spline flow (Durkan et al. 2019).

Each node is one elementwise map ``y_i = f(u_i; theta_i)`` whose parameters
``theta_i`` a MADE (:mod:`flowspec.nets.made`) predicts from the dimensions before
``i`` in the node's ``order`` (and the flow's context). Whichever side the MADE
reads is cheap: one pass gives every ``theta_i`` at once. The other direction is
solved exactly, dimension by dimension, in D passes (:meth:`MADE.autoregress`);
it is not numerical, so ``analytic = "both"``.

* ``maf``: forward (data -> latent, the density) is the one-pass side;
* ``iaf``: the same map turned around -- the inverse (latent -> data, sampling and
  reverse KL) is one pass, the density takes D passes;
* ``rq_spline_autoregressive``: a monotone RQ spline per dimension instead of an
  affine map, forward in one pass;
* ``autoregressive``: any transformer (:mod:`flowspec.bijectors.transformers`), the
  fast side chosen by ``fast``; the three above are its classic pairs.

Parameters shared by all three: ``hidden`` and ``activation`` of the MADE, and
``order``/``seed``/``parity`` of the autoregressive order (write ``parity: ${i}``
in a repeat to reverse the order between layers, as MAF does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.spline import SPLINE_SCHEMA
from flowspec.bijectors.transformers import (
    TRANSFORMER_SCHEMA,
    Transformer,
    build_transformer,
    transformer_count,
)
from flowspec.errors import ShapeError
from flowspec.nets.made import MADE, ORDER_SCHEMA, SEED_SCHEMA, check_order, make_ranks
from flowspec.nets.mlp import ACTIVATIONS
from flowspec.registry import params_schema

COMMON_SCHEMA: dict[str, Any] = {
    "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1},
               "default": [256, 256], "description": "hidden layer widths of the MADE"},
    "activation": {"enum": list(ACTIVATIONS), "default": "relu",
                   "description": "nonlinearity of the MADE's hidden layers"},
    "order": ORDER_SCHEMA,
    "seed": SEED_SCHEMA,
    "parity": {"type": "integer", "default": 0,
               "description": "taken mod 2; 1 reverses the order (write \"${i}\" in a repeat "
               "to alternate, as MAF does)"},
}
LOG_SCALE_BOUND_SCHEMA: dict[str, Any] = {
    "type": "number", "exclusiveMinimum": 0, "default": 5.0,
    "description": "log-scales are soft-clamped to (-bound, bound): bound * tanh(a / bound)",
}


def _params(**extra: dict[str, Any]) -> dict[str, Any]:
    return params_schema(**COMMON_SCHEMA, **extra)


#: the most sequential passes an exported graph unrolls (flowspec export)
MAX_EXPORT_PASSES = 64


class Autoregressive(Bijector):
    """Shared machinery: a MADE on the one-pass side, the transformer on every dimension.

    ``_fast(u)`` computes ``y = f(u; theta(u))`` in one MADE pass; ``_slow(y)``
    inverts it in D passes. Subclasses say which of them is ``forward``.
    """

    reconstruct = "checkpoint"  # one direction costs D passes: recompute from the input

    n_params: int = 2

    def __init__(self, in_shape: Shape, context_shape: Shape | None, transformer: Any, *,
                 hidden: Sequence[int], activation: str, order: Any, seed: int | None,
                 parity: int):
        super().__init__(tuple(in_shape), context_shape)
        self._check(in_shape, order)
        d = int(in_shape[0])
        # shape (): one set of transformer-owned parameters, as the D-pass solve sees one
        # dimension at a time
        self.transformer: Transformer = build_transformer(transformer, ())
        self.n_params = n_params = transformer_count(transformer)
        ranks = make_ranks(d, order, seed, parity)
        self.made = MADE((d,), (d * n_params,), context_shape, hidden=list(hidden),
                         activation=activation, order=ranks.tolist(), zero_init=True)

    @classmethod
    def _check(cls, in_shape: Shape, order: Any) -> None:
        if len(in_shape) != 1:
            raise ShapeError(f"{cls.registered_name} acts on vectors [D]; got "  # type: ignore[attr-defined]
                             f"{list(in_shape)} (put a flatten node in front)")
        check_order(int(in_shape[0]), order)

    @classmethod
    def out_shape(cls, in_shape, order="natural", **_):
        cls._check(tuple(in_shape), order)
        return tuple(in_shape)

    def _solved(self, fast_is_forward: bool) -> None:
        """Mark the slow direction as numerical when the transformer has no closed inverse."""
        if not self.transformer.analytic_inverse:
            self.analytic = "forward" if fast_is_forward else "inverse"  # type: ignore[misc]
            self.tolerance = self.transformer.tolerance  # type: ignore[misc]

    # per-dimension map: y = f(u; theta); theta [..., P]
    def elementwise(self, u: torch.Tensor, theta: torch.Tensor, inverse: bool):
        """``(out, log|d out / d in|)`` elementwise; ``inverse`` maps y back to u."""
        if inverse:
            return self.transformer.inverse(u, theta)
        return self.transformer(u, theta)

    def _fast(self, u: torch.Tensor, context: torch.Tensor | None):
        theta = self.made(u, context).view(u.shape[0], u.shape[1], self.n_params)
        y, ld = self.elementwise(u, theta, inverse=False)
        return y, ld.sum(1)

    def _slow(self, y: torch.Tensor, context: torch.Tensor | None):
        def solve(y_j: torch.Tensor, theta_j: torch.Tensor):
            return self.elementwise(y_j, theta_j, inverse=True)

        return self.made.autoregress(y, context, solve)

    def _ctx(self, context: torch.Tensor | None) -> torch.Tensor | None:
        return context if self.context_shape is not None else None

    #: the direction that runs D sequential passes (MAF and the spline: the inverse)
    slow_direction = "inverse"

    def export_problem(self, direction: str) -> str | None:
        """Exporters unroll the D passes of the slow direction: refuse large D."""
        d = int(self.in_shape[0])
        if direction == self.slow_direction and d > MAX_EXPORT_PASSES:
            return (f"its {direction} runs D = {d} sequential passes; an exported graph "
                    f"unrolls at most {MAX_EXPORT_PASSES}")
        return None


class _AffineAutoregressive(Autoregressive):
    """``y = u * exp(s) + t`` with a soft-clamped log-scale ``s = B tanh(a / B)``: the
    map of ``maf`` and ``iaf``, which differ only in which direction is one pass.

    Why bounded: an unbounded ``exp(a)`` lets one large conditioner output scale a
    dimension by e^50 early in training (NaN losses), and the D-pass inverse divides
    by that scale. ``B tanh(a / B)`` is the identity near 0 (a zero-initialised MADE
    still starts as the identity map, small outputs are not distorted) and keeps every
    layer's log-scale in (-B, B); stacks of layers (and batch norm) reach any scale.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 hidden: Sequence[int] = (256, 256), activation: str = "relu",
                 order: Any = "natural", seed: int | None = None, parity: int = 0,
                 log_scale_bound: float = 5.0):
        super().__init__(in_shape, context_shape,
                         {"affine": {"scale": "soft", "bound": log_scale_bound}},
                         hidden=hidden, activation=activation, order=order, seed=seed,
                         parity=parity)
        self.log_scale_bound = float(log_scale_bound)


_MLP_SMALL: dict[str, Any] = {"hidden": [8]}
_AFFINE_EXAMPLES = [
    {"in_shape": [3], "params": _MLP_SMALL},
    {"in_shape": [4], "context_shape": [2], "params": {"hidden": [8, 6], "order": "reverse"}},
    {"in_shape": [5], "params": {"hidden": [10], "order": "random", "seed": 3,
                                 "activation": "tanh"}},
    {"in_shape": [3], "context_shape": [3],
     "params": {"hidden": [8], "order": [1, 2, 0], "parity": 1, "log_scale_bound": 2.0}},
    {"in_shape": [4], "params": {"hidden": [], "parity": 1}},
    {"in_shape": [1], "context_shape": [2], "params": {"hidden": [4]}},
]


@NODES.register("maf", schema=_params(log_scale_bound=LOG_SCALE_BOUND_SCHEMA),
                category="autoregressive", examples=_AFFINE_EXAMPLES)
class MAF(_AffineAutoregressive):
    """Masked autoregressive flow layer (MAF): an affine map per dimension whose shift
    and log-scale a MADE predicts from the earlier data dimensions; density in one pass.

    Forward (data -> latent) ``z_i = x_i * exp(s_i(x_<i)) + t_i(x_<i)`` is one MADE
    pass; the inverse (sampling) runs D exact sequential passes. Log-scales are
    soft-clamped to ``(-log_scale_bound, log_scale_bound)`` for stability. Vectors
    only (flatten images first); the MADE starts at zero, so the layer starts as
    the identity.
    """

    def forward(self, x, context=None):
        return self._fast(x, self._ctx(context))

    def inverse(self, y, context=None):
        return self._slow(y, self._ctx(context))


@NODES.register("iaf", schema=_params(log_scale_bound=LOG_SCALE_BOUND_SCHEMA),
                category="autoregressive", examples=_AFFINE_EXAMPLES)
class IAF(_AffineAutoregressive):
    """Inverse autoregressive flow layer (IAF): MAF's map with the fast direction
    swapped -- sampling (latent -> data) in one pass, the density in D passes.

    Inverse (latent -> data) ``x_i = z_i * exp(s_i(z_<i)) + t_i(z_<i)`` is one MADE
    pass on the latent; the forward (data -> latent) runs D exact sequential passes.
    The choice for variational inference and reverse-KL fitting, where samples and
    their density are needed together. Same parameters as ``maf``.
    """

    slow_direction = "forward"

    def forward(self, x, context=None):
        return self._slow(x, self._ctx(context))

    def inverse(self, y, context=None):
        return self._fast(y, self._ctx(context))


@NODES.register(
    "rq_spline_autoregressive",
    schema=_params(**SPLINE_SCHEMA),
    category="autoregressive",
    examples=[
        {"in_shape": [3], "params": {"hidden": [8], "bins": 4}},
        {"in_shape": [4], "context_shape": [2],
         "params": {"hidden": [8, 8], "bins": 3, "bound": 2.0, "order": "reverse"}},
        {"in_shape": [3], "params": {"hidden": [6], "bins": 5, "order": "random", "seed": 0}},
        {"in_shape": [3], "context_shape": [1],
         "params": {"hidden": [6], "bins": 2, "order": [2, 0, 1], "parity": 1,
                    "bound": 1.0}},
        {"in_shape": [2], "params": {"hidden": [], "bins": 3}},
        {"in_shape": [3], "params": {"hidden": [6], "bins": 4, "parametrization": "zuko"}},
    ],
)
class RQSplineAutoregressive(Autoregressive):
    """Autoregressive neural spline flow layer (Durkan et al. 2019): a monotone
    rational-quadratic spline per dimension, its bins predicted by a MADE from the
    earlier dimensions; far more flexible than ``maf`` per layer.

    Spline on ``[-bound, bound]`` with ``bins`` bins, identity outside (linear
    tails); the same spline as ``rq_spline_coupling``. Forward (data -> latent) is
    one MADE pass; the inverse runs D exact sequential passes (each a closed-form
    quadratic solve). A zero MADE output is the identity map.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 hidden: Sequence[int] = (256, 256), activation: str = "relu",
                 order: Any = "natural", seed: int | None = None, parity: int = 0,
                 bins: int = 8, bound: float = 3.0, parametrization: str = "durkan"):
        super().__init__(in_shape, context_shape,
                         {"rq_spline": {"bins": bins, "bound": bound,
                                        "parametrization": parametrization}},
                         hidden=hidden, activation=activation, order=order, seed=seed,
                         parity=parity)
        self.bins = int(bins)
        self.bound = float(bound)

    def forward(self, x, context=None):
        return self._fast(x, self._ctx(context))

    def inverse(self, y, context=None):
        return self._slow(y, self._ctx(context))



@NODES.register(
    "autoregressive",
    schema=_params(
        transformer=TRANSFORMER_SCHEMA,
        fast={"enum": ["forward", "inverse"], "default": "forward",
              "description": "the one-pass direction: forward (density, as maf) or inverse "
              "(sampling, as iaf); the other runs D sequential passes"},
    ),
    category="autoregressive",
    examples=[
        {"in_shape": [3], "params": {"hidden": [8]}},
        {"in_shape": [3], "context_shape": [2],
         "params": {"hidden": [8], "fast": "inverse", "transformer": "additive"}},
        {"in_shape": [3], "params": {"hidden": [8], "order": "reverse",
                                     "transformer": {"rq_spline": {"bins": 3}}}},
        {"in_shape": [2], "params": {"hidden": [6],
                                     "transformer": {"circular_rq_spline": {"bins": 4}}}},
        {"in_shape": [3], "params": {"hidden": [8],
                                     "transformer": {"sos": {"polynomials": 2, "degree": 3}}}},
        {"in_shape": [2], "params": {"hidden": [8], "fast": "inverse",
                                     "transformer": {"bernstein": {"degree": 6}}}},
        {"in_shape": [3], "context_shape": [1],
         "params": {"hidden": [8], "transformer": {"umnn": {"hidden": [8], "embedding": 2,
                                                             "nodes": 16}}}},
        {"in_shape": [2], "params": {"hidden": [8], "transformer": {
            "umnn": {"hidden": [6], "embedding": 1, "quadrature": "clenshaw_curtis"}}}},
        {"in_shape": [3], "params": {"hidden": [8], "transformer": {"dsf": {"units": 4}}}},
        {"in_shape": [2], "params": {"hidden": [8], "fast": "inverse",
                                     "transformer": {"ddsf": {"units": 3, "layers": 3}}}},
    ],
)
class GenericAutoregressive(Autoregressive):
    """Masked autoregressive layer with any transformer: a MADE predicts each
    dimension's transformer parameters from the earlier dimensions (NAF with ``dsf`` /
    ``ddsf``, UNAF with ``umnn``, SOS flows with ``sos``, Bernstein flows with
    ``bernstein``, neural spline flows with ``rq_spline``, MAF with ``affine``).

    ``fast: forward`` (the default): the density is one MADE pass and sampling runs
    D sequential passes; ``fast: inverse`` swaps them (IAF). With a numerically
    inverted transformer each sequential pass solves its dimension to the
    transformer's tolerance, so sampling (or, with ``fast: inverse``, the density)
    is numerical.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 hidden: Sequence[int] = (256, 256), activation: str = "relu",
                 order: Any = "natural", seed: int | None = None, parity: int = 0,
                 transformer: Any = "affine", fast: str = "forward"):
        super().__init__(in_shape, context_shape, transformer, hidden=hidden,
                         activation=activation, order=order, seed=seed, parity=parity)
        if fast not in ("forward", "inverse"):
            raise ValueError(f"fast must be 'forward' or 'inverse', got {fast!r}")
        self.fast = fast
        self._solved(fast == "forward")

    def forward(self, x, context=None):
        if self.fast == "forward":
            return self._fast(x, self._ctx(context))
        return self._slow(x, self._ctx(context))

    def inverse(self, y, context=None):
        if self.fast == "forward":
            return self._slow(y, self._ctx(context))
        return self._fast(y, self._ctx(context))
