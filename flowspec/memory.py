"""Training memory modes: what the backward pass keeps of the forward pass.

``train.memory``:

* ``none`` -- autograd keeps every node's activations (fastest, memory grows with depth);
* ``checkpoint`` -- each node's activations are recomputed from its kept input;
* ``invertible`` -- a chain of nodes that invert exactly keeps only the chain's output:
  backward rebuilds each node's input from its output with the node's own inverse,
  re-runs that one node with autograd and passes the gradient on (RevNets, Gomez et
  al. 2017). Memory stays flat in depth: only tensors entering or leaving a chain
  (splits, factor-outs) are kept, plus one node's activations at a time.

A node says how it takes part by ``reconstruct`` (see :class:`~flowspec.bijectors.base.
Bijector`): ``exact`` nodes chain; ``checkpoint`` nodes (a numerical or costly inverse)
are checkpointed instead and ``keep`` nodes (a forward with side effects in training,
e.g. batch statistics) run as usual -- both break the chain, and :func:`fallbacks`
names them so the trainer can say so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

MODES = ("none", "checkpoint", "invertible")


def reconstruct_mode(node: nn.Module) -> str:
    """``exact``, ``checkpoint`` or ``keep`` for a node (default from ``analytic``).

    A node with active dropout is checkpointed: its inverse in backward would draw a new
    dropout mask and rebuild a different input, while checkpointing replays the RNG."""
    if has_dropout(node):
        return "checkpoint"
    declared = getattr(node, "reconstruct", None)
    if declared is not None:
        return declared
    if getattr(node, "n_in", 1) != 1 or getattr(node, "n_out", 1) != 1:
        return "keep"  # splits/concats cost nothing to keep: they only move tensors
    return "exact" if getattr(node, "analytic", "both") == "both" else "checkpoint"


def has_dropout(node: nn.Module) -> bool:
    """Whether a node's forward drops units at random (``p > 0``) in training."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in node.modules())


def rebuild(node: nn.Module, y: torch.Tensor, context: torch.Tensor | None):
    """``(leaves, x, forward(x) with autograd, its logdet, grad_x)`` of a node's output
    ``y``: its own one-pass ``rebuild`` where it has one (couplings), else the inverse
    without autograd and the forward again with it."""
    own = getattr(node, "rebuild", None)
    if own is not None:
        return own(y, context)
    with torch.no_grad():
        x, _ = node.inverse(y, context)
    x = x.detach().requires_grad_(True)
    y2, ld2 = node(x, context)
    return [x], x.detach(), y2, ld2, lambda g: g[0]


class _Chain(torch.autograd.Function):
    """Forward: the nodes without autograd, keeping only the output. Backward: node by
    node from the end, rebuild the input by the inverse, recompute, pass gradients on."""

    @staticmethod
    def forward(ctx, chain: InvertibleChain, context: torch.Tensor | None, x: torch.Tensor,
                *params: torch.Tensor):
        logdet = None
        for node in chain.nodes:
            x, ld = node(x, context)
            logdet = ld if logdet is None else logdet + ld
        ctx.chain = chain
        ctx.save_for_backward(x, context if context is not None else torch.empty(0))
        ctx.has_context = context is not None
        return x, logdet

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor | None, grad_ld: torch.Tensor | None):
        y, context = ctx.saved_tensors
        context = context if ctx.has_context else None
        chain: InvertibleChain = ctx.chain
        ctx_grad = ctx.needs_input_grad[1]
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_ctx = None
        param_grads: list[torch.Tensor | None] = []
        for node, params in zip(reversed(chain.nodes), reversed(chain.params)):
            with torch.enable_grad():
                c = context.detach().requires_grad_(True) if ctx_grad else context
                leaves, x, y2, ld2, grad_x = rebuild(node, y, c)
                gld = torch.zeros_like(ld2) if grad_ld is None else grad_ld
                outs = [(o, g) for o, g in ((y2, grad_y), (ld2, gld)) if o.requires_grad]
                inputs = [*leaves, *params] + ([c] if ctx_grad else [])
                grads = torch.autograd.grad([o for o, _ in outs], inputs, [g for _, g in outs],
                                            allow_unused=True)
            n = len(leaves)
            leaf_grads = [g if g is not None else torch.zeros_like(t)
                          for g, t in zip(grads[:n], leaves)]
            grad_y = grad_x(leaf_grads)
            param_grads = list(grads[n:n + len(params)]) + param_grads
            if ctx_grad and grads[-1] is not None:
                grad_ctx = grads[-1] if grad_ctx is None else grad_ctx + grads[-1]
            y = x.detach()
        return (None, grad_ctx, grad_y, *param_grads)


class InvertibleChain:
    """Consecutive ``exact`` nodes run as one step that keeps no activations."""

    def __init__(self, nodes: Sequence[nn.Module]):
        self.nodes = list(nodes)
        self.params = [[p for p in n.parameters() if p.requires_grad] for n in self.nodes]

    def __call__(self, x: torch.Tensor, context: torch.Tensor | None = None):
        self.params = [[p for p in n.parameters() if p.requires_grad] for n in self.nodes]
        flat = [p for ps in self.params for p in ps]
        return _Chain.apply(self, context, x, *flat)


def checkpointed(node: nn.Module):
    """``node`` recomputed in backward from its kept input (torch.utils.checkpoint)."""

    def run(inp: Any, context: torch.Tensor | None):
        return checkpoint(node, inp, context, use_reentrant=False)

    return run


@dataclass
class Step:
    """One step of a memory-saving forward walk: a node or a chain of nodes."""

    ids: list[str]
    fn: Any
    ins: list[str]
    outs: list[str]


def plan(schedule: Sequence[tuple[str, nn.Module, list[str], list[str]]],
         consumers: dict[str, int]) -> list[Step]:
    """Group a forward schedule ``(id, node, ins, outs)`` into chains and single steps.

    A chain grows while the next node is ``exact`` and reads exactly the port the
    previous one wrote (and nothing else reads it); anything else ends it.
    """
    steps: list[Step] = []
    run: list[tuple[str, nn.Module, list[str], list[str]]] = []

    def close() -> None:
        if run:
            steps.append(Step([r[0] for r in run], InvertibleChain([r[1] for r in run]),
                              run[0][2], run[-1][3]))
            run.clear()

    for nid, node, ins, outs in schedule:
        mode = reconstruct_mode(node)
        if mode != "exact":
            close()
            fn = checkpointed(node) if mode == "checkpoint" else node
            steps.append(Step([nid], fn, ins, outs))
            continue
        if run and not (ins == run[-1][3] and consumers.get(ins[0], 0) == 1):
            close()
        run.append((nid, node, ins, outs))
    close()
    return steps


def forward_plan(flow: Any) -> tuple[list[tuple], list[tuple[str, ...]]]:
    """A flow's forward schedule for ``invertible``: ``(steps, ports to drop after each)``
    in the shape :class:`~flowspec.compile.Flow`'s walk runs (label, fn, ins, outs)."""
    consumers: dict[str, int] = {}
    for _, _, ins, _ in flow._fwd:
        for p in ins:
            consumers[p] = consumers.get(p, 0) + 1
    for _, _, port, cond in flow._lat:
        for p in (port, cond):
            if p:
                consumers[p] = consumers.get(p, 0) + 1
    steps = plan(flow._fwd, consumers)
    keep = {flow.graph.input_port} | {t[2] for t in flow._lat} | {t[3] for t in flow._lat if t[3]}
    items = [(s.ids[-1], s.fn, s.ins, s.outs) for s in steps]
    drops = [tuple(p for p in s.ins if p not in keep) for s in steps]
    return items, drops


def checkpoint_plan(flow: Any) -> tuple[list[tuple], list[tuple[str, ...]]]:
    """The schedule with every node checkpointed (where chains cannot be exact)."""
    return [(nid, checkpointed(node), ins, outs) for nid, node, ins, outs in flow._fwd], \
        flow._fwd_drop


_warned_inexact = False


def inexact_here(x: torch.Tensor) -> bool:
    """Under autocast or in a half dtype no inverse is exact enough: warn once, say so."""
    global _warned_inexact
    low = x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type)
    if low and not _warned_inexact:
        _warned_inexact = True
        warnings.warn("train.memory: invertible needs float32 inverses; under bf16/fp16 it "
                      "checkpoints every node instead (train.memory: checkpoint)", stacklevel=3)
    return low


def fallbacks(nodes: Sequence[tuple[str, nn.Module]]) -> list[str]:
    """Lines naming the nodes ``invertible`` checkpoints or keeps instead, and why."""
    groups: dict[tuple[str, str], list[str]] = {}
    for nid, node in nodes:
        mode = reconstruct_mode(node)
        if mode == "exact" or getattr(node, "n_in", 1) != 1 or getattr(node, "n_out", 1) != 1:
            continue
        kind = getattr(node, "registered_name", type(node).__name__)
        reason = ("checkpointed (its net uses dropout, which an inverse cannot replay)"
                  if has_dropout(node) else
                  "checkpointed (its inverse is numerical or costly)" if mode == "checkpoint"
                  else "keeps its activations (its training forward has side effects)")
        groups.setdefault((kind, reason), []).append(nid)
    lines = []
    for (kind, reason), ids in groups.items():
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        lines.append(f"train.memory invertible: {kind} ({shown}) {reason}")
    return lines
