"""Data-dependent statistics, fitted on the training split before the first step.

The mechanism is generic: a node exposes

* ``fit_data(batches)`` -- consume an iterable of *its own inputs* (tensors, or tuples
  for multi-input nodes) and set its statistics, streaming; and
* ``needs_data_fit`` -- True while it has none (False once fitted or loaded).

:func:`fit_statistics` visits those nodes in forward order. For each it replays
the forward walk of the flow on the training data, batch by batch, and stops the
walk at the node's input (a forward pre-hook), so the node sees the data exactly
as it reaches it through the nodes before it, already fitted. The walk runs in
eval mode under ``no_grad``; nodes before a fitted node that initialise from their
first train-mode batch (``actnorm``) are still at their initial values then, so
put statistics-fitted nodes such as ``standardize`` first.

The trainer calls this for fresh runs only (a resumed run keeps its statistics);
validation and test data never reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

Batches = Callable[[], Iterable[tuple[torch.Tensor, Any]]]


class _Reached(Exception):
    """Raised by the pre-hook to stop the walk at the node being fitted."""

    def __init__(self, value: Any):
        self.value = value


def pending_nodes(flow: nn.Module) -> list[tuple[str, nn.Module]]:
    """Nodes with a ``fit_data`` hook that still need statistics, in forward order."""
    return [(nid, node) for nid, node in flow.node_items()
            if callable(getattr(node, "fit_data", None)) and getattr(node, "needs_data_fit",
                                                                       False)]


def _inputs_at(flow: nn.Module, node: nn.Module, batches: Batches) -> Iterator[Any]:
    def stop(module: nn.Module, args: tuple) -> None:
        raise _Reached(args[0])

    for x, context in batches():
        handle = node.register_forward_pre_hook(stop)
        try:
            flow(x, context)
        except _Reached as reached:
            yield reached.value
        else:  # pragma: no cover - every node of the flow runs in a forward walk
            raise RuntimeError("the forward walk never reached the node being fitted")
        finally:
            handle.remove()


@torch.no_grad()
def fit_statistics(flow: nn.Module, batches: Batches) -> list[str]:
    """Fit every node that needs data statistics; return their ids.

    ``batches()`` returns a fresh iterable of ``(x, context)`` model-input batches of
    the training split each time it is called (once per fitted node).
    """
    todo = pending_nodes(flow)
    if not todo:
        return []
    was_training = flow.training
    flow.eval()
    try:
        for _, node in todo:
            node.fit_data(_inputs_at(flow, node, batches))
    finally:
        flow.train(was_training)
    return [nid for nid, _ in todo]


def tensor_batches(x: torch.Tensor, context: Any = None, batch_size: int = 65536,
                   device: Any = None) -> Batches:
    """``batches`` over whole tensors (for Python use: ``fit_statistics(flow,
    tensor_batches(x_train))``)."""
    def gen() -> Iterator[tuple[torch.Tensor, Any]]:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            cb = context[start:start + batch_size] if torch.is_tensor(context) else context
            if device is not None:
                xb = xb.to(device)
                cb = cb.to(device) if torch.is_tensor(cb) else cb
            yield xb, cb

    return gen
