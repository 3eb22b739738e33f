"""Fixed permutations of the feature/channel dimension, so stacked couplings and
autoregressive layers mix all dimensions."""

from __future__ import annotations

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape, batch_zeros
from flowspec.errors import ShapeError
from flowspec.registry import params_schema

KINDS = ("reverse", "random", "fixed")


def make_order(n: int, kind: str = "reverse", seed: int | None = None,
               order: list[int] | None = None) -> torch.Tensor:
    """The permutation (int64 ``[n]``): output entry ``i`` is input entry ``perm[i]``."""
    if kind == "reverse":
        return torch.arange(n - 1, -1, -1)
    if kind == "random":
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return torch.randperm(n, generator=gen)
    if kind == "fixed":
        if order is None:
            raise ValueError("permutation kind 'fixed' needs an 'order', e.g. order: [2, 0, 1]")
        perm = [int(i) for i in order]
        if sorted(perm) != list(range(n)):
            raise ShapeError(f"permutation order {perm} is not a permutation of 0..{n - 1} "
                             f"(dim 0 has {n} entries)")
        return torch.tensor(perm, dtype=torch.int64)
    raise ValueError(f"unknown permutation kind '{kind}' (known: {', '.join(KINDS)})")


@NODES.register(
    "permutation",
    schema=params_schema(
        kind={"enum": list(KINDS), "default": "reverse",
              "description": "reverse the order, shuffle it randomly, or use 'order'"},
        seed={"type": ["integer", "null"], "default": None,
              "description": "seed of the random shuffle (null: torch's global RNG); the "
              "order is saved in checkpoints either way"},
        order={"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}},
                         {"type": "null"}],
               "default": None, "description": "the order for kind: fixed"},
    ),
    category="permutation",
    examples=[
        {"in_shape": [4]},
        {"in_shape": [5], "params": {"kind": "random", "seed": 3}},
        {"in_shape": [3, 2, 2], "params": {"kind": "fixed", "order": [2, 0, 1]}},
    ],
)
class Permutation(Bijector):
    """Permute dim 0 of each example (features of a vector, channels of an image):
    the classic way to alternate which dimensions couplings transform.

    ``y[:, i] = x[:, perm[i]]``; log-det 0. The order is a buffer, so a random
    shuffle is restored exactly from a checkpoint.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 kind: str = "reverse", seed: int | None = None, order: list[int] | None = None):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape, kind=kind, order=order)
        perm = make_order(in_shape[0], kind, seed, order)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    @classmethod
    def out_shape(cls, in_shape, kind="reverse", order=None, **_):
        if not in_shape:
            raise ShapeError("permutation needs at least one dimension")
        if kind == "fixed":
            make_order(in_shape[0], kind, order=order)
        return tuple(in_shape)

    def forward(self, x, context=None):
        return x.index_select(1, self.perm), batch_zeros(x)

    def inverse(self, y, context=None):
        return y.index_select(1, self.inv_perm), batch_zeros(y)
