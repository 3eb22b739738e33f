"""MADE (Germain et al. 2015): a masked MLP whose outputs for input dimension ``i``
depend only on the inputs that come before ``i`` in an order -- the conditioner of
every masked autoregressive flow (MAF, IAF, autoregressive neural spline flows).

Degrees: input ``j`` has degree ``rank(j)`` (0 .. D-1, its place in the order);
hidden units get degrees cycling through ``lo .. D-2`` layer by layer (MAF's
"sequential" assignment). A hidden unit sees the units of the layer below with a
degree <= its own, and output ``i`` sees the last hidden units with a degree <
``rank(i)``; so output ``i`` depends on input ``j`` only if ``rank(j) < rank(i)``.
``lo`` is -1 when there is a context (or D = 1): those units see no input, only
the context, so even the first dimension's parameters can depend on the context
(the context is an input of every first-layer unit, as in zuko and nflows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspec.errors import ShapeError
from flowspec.nets.base import NETS
from flowspec.nets.mlp import ACTIVATIONS
from flowspec.registry import params_schema

ORDERS = ("natural", "reverse", "random")

ORDER_SCHEMA: dict[str, Any] = {
    "anyOf": [{"enum": list(ORDERS)},
              {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}],
    "default": "natural",
    "description": "autoregressive order: natural (dim 0 first), reverse, random (see "
    "seed), or a fixed list of ranks, rank[i] = place of dim i (dim i depends on dims "
    "with a smaller rank); saved in checkpoints",
}
SEED_SCHEMA: dict[str, Any] = {
    "type": ["integer", "null"], "default": None,
    "description": "seed of order: random (null: torch's global RNG)",
}


def make_ranks(d: int, order: str | Sequence[int] = "natural", seed: int | None = None,
               parity: int = 0) -> torch.Tensor:
    """``rank[i]`` (int64 ``[d]``): the place of dimension ``i`` in the autoregressive order.

    ``parity`` 1 reverses whatever order was chosen (so ``parity: ${i}`` in a repeat
    alternates, as MAF reverses the order between layers).
    """
    if isinstance(order, str):
        if order == "natural":
            ranks = torch.arange(d)
        elif order == "reverse":
            ranks = torch.arange(d - 1, -1, -1)
        elif order == "random":
            gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            ranks = torch.randperm(d, generator=gen)
        else:
            raise ValueError(f"unknown order '{order}' (known: {', '.join(ORDERS)} or a list)")
    else:
        ranks = torch.tensor([int(r) for r in order], dtype=torch.int64)
        if sorted(ranks.tolist()) != list(range(d)):
            raise ShapeError(f"order {ranks.tolist()} is not a permutation of 0..{d - 1} "
                             f"(the input has {d} dimensions)")
    if parity % 2:
        ranks = d - 1 - ranks
    return ranks


def check_order(d: int, order: Any) -> None:
    """Raise ``ShapeError`` if a fixed order does not fit ``d`` dimensions (static check)."""
    if not isinstance(order, str):
        make_ranks(d, order)


def hidden_degrees(width: int, d: int, has_context: bool) -> torch.Tensor:
    lo = -1 if (has_context or d == 1) else 0
    span = (d - 2) - lo + 1
    return lo + torch.arange(width) % span


@NETS.register(
    "made",
    schema=params_schema(
        hidden={"type": "array", "items": {"type": "integer", "minimum": 1},
                "default": [256, 256], "description": "width of each hidden layer"},
        activation={"enum": list(ACTIVATIONS), "default": "relu",
                    "description": "nonlinearity after every hidden layer"},
        order=ORDER_SCHEMA,
        seed=SEED_SCHEMA,
        zero_init={"type": "boolean", "default": True,
                   "description": "zero the last layer, so a flow starts as the identity"},
    ),
    category="autoregressive",
    examples=[
        {"in_shape": [3], "out_shape": [6], "params": {"hidden": [8]}},
        {"in_shape": [4], "out_shape": [4, 3], "context_shape": [2],
         "params": {"hidden": [8, 8], "order": "random", "seed": 1, "activation": "tanh"}},
        {"in_shape": [3], "out_shape": [3], "params": {"hidden": [], "order": [2, 0, 1],
                                                       "zero_init": False}},
        {"in_shape": [1], "out_shape": [2], "context_shape": [3],
         "params": {"hidden": [4], "order": "reverse"}},
    ],
)
class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: an MLP on a vector ``[D]`` whose
    ``P = out / D`` outputs per dimension depend only on earlier dimensions of ``order``.

    Output element ``i * P + p`` (reshaped to ``out_shape``) is parameter ``p`` of
    dimension ``i``. A context (flattened) feeds every first-layer unit. The order
    is a saved buffer and the masks are rebuilt from it on load, so a random order is
    restored exactly from a checkpoint. With ``zero_init`` the last layer starts at zero.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        order: str | Sequence[int] = "natural",
        seed: int | None = None,
        zero_init: bool = True,
    ):
        super().__init__()
        self.check_shapes(in_shape, out_shape)
        d = int(in_shape[0])
        self.features = d
        self.n_params = math.prod(out_shape) // d
        self.out_shape = tuple(out_shape)
        self.context_features = math.prod(context_shape) if context_shape else 0
        ranks = make_ranks(d, order, seed)
        self.register_buffer("order", ranks)
        #: dims in the order they are generated (dims_by_rank[k] has rank k)
        self.register_buffer("dims_by_rank", torch.argsort(ranks))
        # The same order as Python ints: the D passes are unrolled by exporters, which
        # cannot index with numbers read from a (traced) buffer.
        self._dims_by_rank: list[int] = self.dims_by_rank.tolist()
        self.act: Callable[[torch.Tensor], torch.Tensor] = ACTIVATIONS[activation]()

        self.hidden = [int(w) for w in hidden]
        masks = self._masks(ranks)
        self.layers = nn.ModuleList()
        for k, mask in enumerate(masks):
            layer = nn.Linear(mask.shape[1], mask.shape[0])
            if k == len(masks) - 1 and zero_init:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.layers.append(layer)
            # float, like the weights (a bool mask is cast to a temporary every product);
            # not saved: rebuilt from `order` on load (see _load_from_state_dict)
            self.register_buffer(f"mask{k}", mask.to(layer.weight.dtype), persistent=False)

    def _masks(self, ranks: torch.Tensor) -> list[torch.Tensor]:
        """Bool masks ``[out, in]`` of every layer for the order ``ranks``."""
        has_ctx = self.context_features > 0
        d = self.features
        degrees = [ranks] + [hidden_degrees(w, d, has_ctx) for w in self.hidden]
        out_deg = ranks.repeat_interleave(self.n_params)
        masks = []
        for k, deg in enumerate(degrees):
            last = k == len(degrees) - 1
            nxt = out_deg if last else degrees[k + 1]
            mask = (nxt[:, None] > deg[None, :]) if last else (nxt[:, None] >= deg[None, :])
            if k == 0 and has_ctx:  # the context reaches every unit of the first layer
                mask = torch.cat([mask, mask.new_ones(len(nxt), self.context_features)], 1)
            masks.append(mask)
        return masks

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        """After the saved order is loaded, rebuild the masks that follow from it."""
        super()._load_from_state_dict(*args, **kwargs)
        with torch.no_grad():
            for k, mask in enumerate(self._masks(self.order.cpu())):
                getattr(self, f"mask{k}").copy_(mask)
        self._dims_by_rank = self.dims_by_rank.tolist()

    @classmethod
    def check_shapes(cls, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if len(in_shape) != 1:
            raise ShapeError(f"made maps a vector [D]; got {list(in_shape)} (flatten first)")
        if math.prod(out_shape) % in_shape[0] or not math.prod(out_shape):
            raise ShapeError(f"made gives a whole number of outputs per input dimension; got "
                             f"{list(in_shape)} -> {list(out_shape)}")

    def masked_weights(self) -> list[torch.Tensor]:
        return [layer.weight * getattr(self, f"mask{k}") for k, layer in enumerate(self.layers)]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        if self.context_features:
            if context is None:
                raise ShapeError("this made was built with a context; pass one")
            h = torch.cat([h, context.reshape(context.shape[0], -1).to(h.dtype)], 1)
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight * getattr(self, f"mask{k}"), layer.bias)
            if k < last:
                h = self.act(h)
        return h.reshape(x.shape[0], *self.out_shape)

    def autoregress(
        self,
        y: torch.Tensor,
        context: torch.Tensor | None,
        solve: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve ``y = f(u; theta(u))`` for ``u`` in exactly D sequential passes.

        ``solve(y_j, theta_j)`` inverts the elementwise map of one dimension given its
        parameters ``theta_j [B, P]``, returning ``(u_j, log|du_j/dy_j|)``. Pass ``k``
        settles the dimension of rank ``k``; its parameters need only the dimensions
        already settled. Per pass only what changed is computed: the first layer is
        updated by one rank-1 term, and the output layer computes the ``P`` rows of
        one dimension. Masked weights are formed once per call. Returns ``(u, sum of
        log-dets)``.
        """
        b, d, p = y.shape[0], self.features, self.n_params
        ws = self.masked_weights()
        first, last = self.layers[0], self.layers[-1]
        w_in = ws[0][:, :d].t().contiguous()  # [D, H0]: row j = what input j adds
        pre = first.bias.expand(b, -1)
        if self.context_features:
            if context is None:
                raise ShapeError("this made was built with a context; pass one")
            ctx = context.reshape(b, -1).to(y.dtype)
            pre = pre + F.linear(ctx, ws[0][:, d:])
        mids = [(ws[k], self.layers[k].bias) for k in range(1, len(ws) - 1)]
        w_out = ws[-1].view(d, p, -1)
        b_out = last.bias.view(d, p)
        single = len(ws) == 1  # no hidden layer: the first layer is the output layer

        grad = torch.is_grad_enabled()
        pre = pre.clone() if not grad else pre
        u = None if grad else torch.empty_like(y)
        cols: list[torch.Tensor | None] = [None] * d
        logdet = y.new_zeros(b)
        for k, j in enumerate(self._dims_by_rank):
            if single:
                theta = pre[:, j * p:(j + 1) * p]
            else:
                h = self.act(pre)
                for w, bias in mids:
                    h = self.act(F.linear(h, w, bias))
                theta = F.linear(h, w_out[j], b_out[j])
            u_j, ld_j = solve(y[:, j], theta)
            logdet = logdet + ld_j
            if grad:
                cols[j] = u_j
                if k < d - 1:
                    pre = pre + u_j[:, None] * w_in[j]
            else:
                u[:, j] = u_j  # type: ignore[index]
                if k < d - 1:
                    pre.addr_(u_j, w_in[j])
        if grad:
            u = torch.stack(cols, 1)  # type: ignore[arg-type]
        return u, logdet  # type: ignore[return-value]
