"""Held-out likelihood: test NLL in nats and bits/dim, as the papers report them."""

from __future__ import annotations

from typing import Any

import torch

from flowspec.compile import Flow
from flowspec.metrics import bits_per_dim


def batch_context(flow: Flow, y: torch.Tensor | None) -> torch.Tensor | None:
    """The context a conditional flow reads from a batch (its class labels)."""
    if flow.context_shape is None:
        return None
    if y is None:
        from flowspec.errors import DataError

        raise DataError("this flow is conditional on class labels, but the dataset has none",
                        hint="use a labelled dataset or remove model.context")
    return y


@torch.no_grad()
def evaluate_nll(
    flow: Flow,
    split: Any,
    prep: Any,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
    seed: int = 0,
    entropy: float | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, float]:
    """Mean ``-log p(x)`` over a split, with one fixed-seed dequantization draw.

    The noise of batch ``b`` comes from a generator seeded by ``(seed, b)``, so with
    ``shard = (rank, world)`` (rank ``r`` takes batches ``b ≡ r mod world``; sums are
    all-reduced) every example gets the same noise as in one process and the mean
    equals the 1-process mean up to float64 summation order.

    ``nll_nats`` is per example on the model's input scale ([0, 1] for images);
    ``bits_per_dim`` (discrete data only) adds the discretisation term
    ``D·ln 2^n_bits`` via :func:`flowspec.metrics.bits_per_dim`.
    """
    was_training = flow.training
    flow.eval()
    device = torch.device(device)
    rank, world = shard
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # total nll, examples
    for b, start in enumerate(range(0, split.x.shape[0], batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        if b % world != rank:
            continue
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        xb = split.x[start:start + batch_size].to(device)
        yb = split.y[start:start + batch_size].to(device) if split.y is not None else None
        x = prep(xb, generator=gen)
        lp = flow.log_prob(x, batch_context(flow, yb))
        sums[0] += -lp.double().sum()
        sums[1] += xb.shape[0]
    if world > 1:
        from flowspec.train.distributed import all_reduce_sum

        all_reduce_sum(sums)
    flow.train(was_training)
    n = int(sums[1])
    nll = float(sums[0]) / max(n, 1)
    dims = flow.num_dims
    out: dict[str, float] = {"nll_nats": nll, "nats_per_dim": nll / dims, "n": n}
    if getattr(prep, "n_bits", None):
        out["bits_per_dim"] = float(bits_per_dim(nll, dims, prep.n_bits))
    if entropy is not None:
        out["nll_minus_entropy"] = nll - entropy
    return out
