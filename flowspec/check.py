"""Numerical verification of nodes: round trip and log-det against autograd.

Used by ``flowspec check`` on a whole compiled flow (each node is fed the
values that actually reach it in a float64 forward walk) and by the contract
test over the registry.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowspec.compile import Flow
from flowspec.errors import FlowspecError


@dataclass
class NodeReport:
    node: str
    type: str
    roundtrip_error: float
    logdet_error: float | None  # None when the Jacobian was skipped (too many dims)
    cancel_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        errs = [self.roundtrip_error, self.cancel_error]
        if self.logdet_error is not None:
            errs.append(self.logdet_error)
        return all(math.isfinite(e) and e <= self.tolerance for e in errs)


def jitter_parameters(module: nn.Module, seed: int = 0, amount: float = 0.1) -> None:
    """Perturb every floating parameter (about ``amount`` relative to a unit fan-in).

    Freshly built flows are often the identity (zero-initialised conditioners);
    checking them there would prove nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.is_floating_point():
                continue
            fan_in = p[0].numel() if p.dim() >= 2 else 1
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.add_((amount / math.sqrt(fan_in) * noise).to(p.dtype).to(p.device))


def _flat(t) -> torch.Tensor:
    ts = (t,) if torch.is_tensor(t) else tuple(t)
    return torch.cat([x.reshape(x.shape[0], -1) for x in ts], dim=1)


def _unflat(flat: torch.Tensor, like) -> object:
    ts = (like,) if torch.is_tensor(like) else tuple(like)
    out, start = [], 0
    for t in ts:
        size = t[0].numel()
        out.append(flat[:, start:start + size].reshape(flat.shape[0], *t.shape[1:]))
        start += size
    return out[0] if torch.is_tensor(like) else tuple(out)


def jacobian_logdet(fn, x, context=None) -> torch.Tensor:
    """``log|det J|`` of ``fn`` at each example of ``x``, by autograd (slow, exact)."""
    flat = _flat(x)
    out = []
    for i in range(flat.shape[0]):
        xi = flat[i:i + 1]
        ctx = context[i:i + 1] if context is not None else None

        def single(v, ctx=ctx, like=_slice(x, i)):
            return _flat(fn(_unflat(v, like), ctx)[0])

        try:
            jac = torch.autograd.functional.jacobian(single, xi, vectorize=True)
        except RuntimeError:  # a backward vmap cannot batch (an adjoint ODE solve): row by row
            jac = torch.autograd.functional.jacobian(single, xi)
        jac = jac.reshape(flat.shape[1], flat.shape[1])
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def _slice(x, i):
    return x[i:i + 1] if torch.is_tensor(x) else tuple(t[i:i + 1] for t in x)


def check_node(
    node: nn.Module, x, context: torch.Tensor | None = None, *, max_dims: int = 1024,
    tolerance: float | None = None,
) -> tuple[float, float | None, float]:
    """(round-trip error, log-det error vs autograd, forward+inverse log-det sum) at ``x``."""
    analytic = getattr(node, "analytic", "both")
    # Nodes whose evaluation log-det is an estimate (residual, cnf beyond their exact
    # dims) say so in ``eval_logdet``: forward and inverse then draw the same random
    # numbers (so they must cancel), and the comparison with autograd is skipped.
    estimated = not str(getattr(node, "eval_logdet", "exact")).startswith("exact")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        y, ld_f = node(x, context)
        if estimated:
            torch.manual_seed(0)
        xr, ld_i = node.inverse(y, context)
    rt = float((_flat(xr) - _flat(x)).abs().max())
    cancel = float((ld_f + ld_i).abs().max())
    dims = _flat(x).shape[1]
    ld_err = None
    if dims <= max_dims and not estimated:
        if analytic == "inverse":
            ref = jacobian_logdet(node.inverse, y, context)
            ld_err = float((ref - ld_i).abs().max())
        else:
            ref = jacobian_logdet(node, x, context)
            ld_err = float((ref - ld_f).abs().max())
    return rt, ld_err, cancel


def draw_contexts(flow: Flow, n: int, gen: torch.Generator, data_dir: Any = None
                  ) -> tuple[torch.Tensor | None, str]:
    """Contexts to check a conditional flow at, and where they came from: class labels
    ``0, 1, ...``; else the first ``n`` contexts of the spec's training data when it can
    be read; else standard-normal draws of the declared shape."""
    if flow.context_shape is None:
        return None, ""
    if flow.num_classes:
        return torch.arange(n) % flow.num_classes, f"class labels 0..{flow.num_classes - 1}"
    shape = tuple(flow.context_shape)
    spec = getattr(flow, "spec", None)
    if spec is not None and getattr(spec, "data", None):
        try:
            from flowspec.data import open_spec_dataset

            source, _ = open_spec_dataset(spec, data_dir)
            ctx = source.load("train").context
            if ctx is not None and tuple(ctx.shape[1:]) == shape and ctx.shape[0] >= n:
                return ctx[:n].double(), f"the first {n} contexts of the training data"
        except (FlowspecError, OSError):
            pass  # no data here: random contexts below
    return (torch.randn(n, *shape, generator=gen, dtype=torch.float64),
            f"{n} random N(0, 1) contexts of shape {list(shape)} (no data to draw them from)")


def _inputs(f: Flow, n: int, gen: torch.Generator) -> torch.Tensor:
    """Inputs inside every node's domain: uniform in (0.05, 0.95) (logit included), or,
    behind a declared ``support``, standard-normal points mapped into that support."""
    first = f._fwd[0][1] if f._fwd else None
    if getattr(first, "registered_name", None) == "support":
        z = torch.randn(n, *f.input_shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            return first.inverse(z)[0]
    return 0.05 + 0.9 * torch.rand(n, *f.input_shape, generator=gen, dtype=torch.float64)


def check_flow(flow: Flow, batch: int = 2, max_dims: int = 1024, seed: int = 0,
               context=None, jitter: float = 0.0,
               progress: Callable[[int, int, str, NodeReport | None], None] | None = None,
               notes: list[str] | None = None, data_dir: Any = None,
               ) -> list[NodeReport]:
    """Check every node of ``flow`` in float64 on the values that reach it.

    The input is uniform in (0.05, 0.95), inside every node's domain (logit
    included). A copy of the flow runs one train-mode pass first, so nodes with
    data-dependent initialisation (ActNorm) are checked initialised, then eval mode.
    ``jitter`` perturbs the parameters first (use it on untrained flows).
    ``progress(i, n, node_id, report)`` is called before each node (report None) and
    after it (a big flow takes minutes: the CLI shows where it is). A conditional flow
    without ``context`` is checked at :func:`draw_contexts` (said in ``notes``).
    """
    gen = torch.Generator().manual_seed(seed)
    f = copy.deepcopy(flow).double().cpu()
    if jitter:
        jitter_parameters(f, seed, jitter)
    x = _inputs(f, max(batch, 8), gen)
    if context is None and f.context_shape is not None:
        context, where = draw_contexts(f, x.shape[0], gen, data_dir)
        if notes is not None:
            notes.append(f"checked at {where}")
    with torch.no_grad():
        f.train()
        f.log_prob(x, context)
        f.eval()
    x = x[:batch]
    ctx_full = f.prepare_context(context[:batch] if context is not None else None, batch)
    inputs: dict[str, object] = {}
    port_vals: dict[str, object] = {f.graph.input_port: x}
    reports = []
    for i, (nid, node, ins, outs) in enumerate(f._fwd):
        if progress is not None:
            progress(i, len(f._fwd), nid, None)
        inputs[nid] = port_vals[ins[0]] if len(ins) == 1 else tuple(port_vals[p] for p in ins)
        with torch.no_grad():
            y, _ = node(inputs[nid], ctx_full)
        if len(outs) == 1:
            port_vals[outs[0]] = y
        else:
            port_vals.update(zip(outs, y))
        tol = max(1e-6, float(getattr(node, "tolerance", 0.0)) * 10)
        rt, ld, cancel = check_node(node, inputs[nid], ctx_full, max_dims=max_dims)
        reports.append(NodeReport(nid, getattr(node, "registered_name", type(node).__name__),
                                  rt, ld, cancel, tol))
        if progress is not None:
            progress(i + 1, len(f._fwd), nid, reports[-1])
    return reports


def logdet_methods(flow: Flow) -> dict[str, str]:
    """``{node id: how its log-det is computed in evaluation}`` for the nodes that may
    estimate it (``eval_logdet``: residual, cnf), so a reported likelihood says whether
    it is exact or an estimate."""
    return {nid: str(node.eval_logdet) for nid, node in flow.node_items()
            if hasattr(node, "eval_logdet")}
