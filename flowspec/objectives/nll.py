"""Held-out likelihood: test NLL in nats and bits/dim, as the papers report them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from flowspec.errors import DataError
from flowspec.metrics import bits_per_dim

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.compile import Flow


def batch_context(flow: Flow, y: torch.Tensor | None,
                  context: torch.Tensor | None = None) -> torch.Tensor | None:
    """The context a conditional flow reads from a batch: the class labels ``y`` of a
    class-conditional flow (``model.context: {classes: K}``), else the batch's float
    ``context`` (``model.context: {shape: [K]}``)."""
    if flow.context_shape is None:
        return None
    if flow.num_classes is not None:
        if y is None:
            raise DataError("this flow is conditional on class labels, but the dataset has "
                            "none", hint="use a labelled dataset or remove model.context")
        return y
    if context is None:
        raise DataError(f"this flow is conditional on a context of shape "
                        f"{list(flow.context_shape)}, but the dataset gives none",
                        hint="name the context in the dataset (file: context: [columns] or an "
                             "array name), or remove model.context")
    return context


def check_context(flow: Flow, split: Any) -> None:
    """The dataset's context matches ``model.context`` (checked once, before training):
    a context the flow would ignore, or one of the wrong size, is an error."""
    ctx = getattr(split, "context", None)
    if flow.context_shape is None or flow.num_classes is not None:
        if ctx is not None:
            raise DataError(f"the dataset gives a context of shape {list(ctx.shape[1:])}, but "
                            "the flow is not conditional on it, so it would be ignored",
                            hint=f"add model.context: {{shape: {list(ctx.shape[1:])}}} for "
                                 "p(x | context), or drop the dataset's context for p(x)")
        return
    batch_context(flow, split.y, ctx)  # raises when missing
    if tuple(ctx.shape[1:]) != tuple(flow.context_shape):
        raise DataError(f"the dataset's context has shape {list(ctx.shape[1:])} per example, "
                        f"but model.context is {{shape: {list(flow.context_shape)}}}",
                        hint=f"set model.context: {{shape: {list(ctx.shape[1:])}}}")


def solver_nodes(flow: Any) -> list[Any]:
    """The nodes that report numbers of their last call (``solver_stats``: e.g. a cnf's
    function evaluations), in flow order."""
    return [node for _, node in flow.node_items() if hasattr(node, "solver_stats")]


def solver_stats(nodes: list[Any]) -> dict[str, float]:
    """The nodes' ``solver_stats`` of their last call, summed over nodes (a flow of two
    cnfs costs the function evaluations of both)."""
    out: dict[str, float] = {}
    for node in nodes:
        for key, value in node.solver_stats().items():
            out[key] = out.get(key, 0.0) + float(value)
    return out


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
    ``D·ln 2^n_bits`` via :func:`flowspec.metrics.bits_per_dim`. A flow with ODE
    nodes (``cnf``) also reports ``nfe``: function evaluations per batch's solve,
    summed over the nodes, averaged over this process's batches.
    """
    was_training = flow.training
    flow.eval()
    device = torch.device(device)
    rank, world = shard
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # total nll, examples
    bad_rows: list[tuple[int, torch.Tensor]] = []  # (first index, mask) per batch, no sync
    solvers, solved, batches = solver_nodes(flow), {}, 0
    for b, start in enumerate(range(0, split.x.shape[0], batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        if b % world != rank:
            continue
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        xb = split.x[start:start + batch_size].to(device)
        yb = split.y[start:start + batch_size].to(device) if split.y is not None else None
        ctx = getattr(split, "context", None)
        cb = ctx[start:start + batch_size].to(device) if ctx is not None else None
        x = prep(xb, generator=gen)
        lp = flow.log_prob(x, batch_context(flow, yb, cb))
        sums[0] += -lp.double().sum()
        sums[1] += xb.shape[0]
        batches += 1
        for key, value in solver_stats(solvers).items():
            solved[key] = solved.get(key, 0.0) + value
        bad_rows.append((start, ~torch.isfinite(lp)))
    if world > 1:
        all_reduce_sum(sums)
    flow.train(was_training)
    n = int(sums[1])
    if n == 0:  # a mean over nothing is no result (it would read as NLL 0)
        raise DataError("this split has no examples: there is no NLL to report",
                        hint="evaluate another split (--split test), or add data")
    nll = float(sums[0]) / n
    if not math.isfinite(nll):  # every rank sees the reduced value, so all refuse together
        _refuse_nonfinite(nll, bad_rows, n, world, device)
    dims = flow.num_dims
    out: dict[str, float] = {"nll_nats": nll, "nats_per_dim": nll / dims, "n": n}
    if getattr(prep, "n_bits", None):
        out["bits_per_dim"] = float(bits_per_dim(nll, dims, prep.n_bits))
    if entropy is not None:
        out["nll_minus_entropy"] = nll - entropy
    if batches:
        out.update({key: value / batches for key, value in solved.items()})
    return out


def _refuse_nonfinite(nll: float, bad_rows: list[tuple[int, torch.Tensor]], n: int,
                      world: int = 1, device: torch.device | None = None) -> None:
    """A NaN/inf NLL is never a result: say which examples and what to do.

    Sharded over ``world`` ranks, the count is summed; the indices shown are this rank's.
    """
    from flowspec.errors import FlowspecError

    idx = [start + i for start, mask in bad_rows for i in mask.nonzero().flatten().tolist()]
    count = len(idx)
    if world > 1:
        count = int(all_reduce_sum(torch.tensor(float(count), device=device)))
    shown = ", ".join(map(str, idx[:5])) + (" ..." if len(idx) > 5 else "")
    raise FlowspecError(
        f"the negative log-likelihood is {nll}: the flow gives a non-finite log-density to "
        f"{count} of {n} examples (indices {shown})" if count else
        f"the negative log-likelihood is {nll}: the per-example values are finite but their "
        f"sum overflows",
        hint="the model is degenerate on these inputs (a diverged or undertrained run, or "
             "data unlike the training data): evaluate best.safetensors or an earlier "
             "checkpoint, or retrain with a lower learning rate")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (when a process group is up); returns ``t``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t
