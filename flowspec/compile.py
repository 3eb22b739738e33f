"""Graph IR -> :class:`Flow`, and the only code that walks a graph.

The forward walk (data -> latents) runs the nodes in topological order and
accumulates their log-dets; the inverse walk runs the inverse schedule that
:func:`flowspec.graph.analyse` derived, sampling each latent from its prior when
no value is given. No model ever has a hand-written inverse: it is always this
walk over the nodes' own inverses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from flowspec.autocast import run_fp32, upcast
from flowspec.construct import Construction
from flowspec.errors import FlowspecError
from flowspec.graph import GraphIR, analyse
from flowspec.nets import build_net

Latents = torch.Tensor | tuple[torch.Tensor, ...]
#: called as trace(node_id, node_input, node_output, logdet) after every node of a walk.
TraceFn = Callable[[str, Any, Any, torch.Tensor], None]


def _module_key(node_id: str) -> str:
    return node_id.replace(".", "/")


def _as_float(value: Any, ref: torch.Tensor, what: str) -> torch.Tensor:
    """A tensor, numpy array, list or number -> a tensor of ``ref``'s dtype and device."""
    try:
        t = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise FlowspecError(f"{what} is not numeric data ({type(value).__name__}: {err})",
                            hint="pass a tensor, a numpy array or a nested list of numbers"
                            ) from None
    ints = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in ints):
        raise FlowspecError(f"{what} has dtype {t.dtype}; the flow takes real numbers")
    if t.dtype != ref.dtype or t.device != ref.device:
        t = t.to(device=ref.device, dtype=ref.dtype)
    return t


def _count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FlowspecError(f"the number of samples must be a positive integer, got {n!r}",
                            hint="e.g. flow.sample(1000)")
    return int(n)


class Flow(nn.Module):
    """A compiled normalizing flow.

    ``forward``/``encode`` map data to latents, ``inverse``/``decode`` map latents
    to data. With one latent node, latents are a tensor; with several
    (multi-scale, ``factor_out``), a tuple in the order the latents are declared, so
    ``z, logdet = flow(x)`` gives ``z = (z_1, ..., z_k)`` there
    (``flatten_latents`` makes one ``[batch, D]`` tensor of it). Sampling takes
    ``n`` positionally and the rest by keyword: ``sample(n, temperature=,
    context=)``, ``sample_and_log_prob(n, temperature=, context=)``.
    """

    def __init__(self, graph: GraphIR):
        super().__init__()
        analysis = analyse(graph)
        self.graph = graph
        self.input_shape: tuple[int, ...] = tuple(graph.input_shape)
        ctx_ir = graph.context
        #: the context as passed in (labels: one-hot width); nodes see node_context_shape
        self.context_shape = ctx_ir.tensor_shape if ctx_ir else None
        self.node_context_shape = ctx_ir.node_shape if ctx_ir else None
        self.num_classes = ctx_ir.num_classes if ctx_ir else None
        #: a vector context is standardized with training statistics (model.context.standardize)
        self.context_standardizer: nn.Module | None = None
        if ctx_ir is not None and ctx_ir.num_classes is None and getattr(ctx_ir, "standardize",
                                                                         True):
            from flowspec.bijectors.standardize import ContextStandardizer

            self.context_standardizer = ContextStandardizer(self.context_shape)
        #: model.context_net: embeds the context once, before any node or prior reads it
        self.context_net: nn.Module | None = None
        if ctx_ir is not None and ctx_ir.net is not None:
            self.context_net = build_net(ctx_ir.net, self.context_shape, self.node_context_shape)
        self.checkpoint_grads = False
        #: train.memory: "none" | "checkpoint" | "invertible" (flowspec/memory.py)
        self.memory = "none"
        self._memory_plan: Any = None
        #: the resolved spec this flow was built from (set by flowspec.load / training).
        self.spec: Any = None
        #: what the checkpoint it was loaded from says (step, epoch, metrics, seed);
        #: None for a flow built from a spec (set by flowspec.load and while training)
        self.checkpoint_info: dict[str, Any] | None = None
        #: the run directory and last evaluation of the run that trained it (set by
        #: flowspec.fit; :class:`flowspec.train.RunResult` carries them for every run)
        self.run_dir: Any = None
        self.metrics: dict[str, Any] | None = None
        #: a trace every walk calls while set (diagnostics, e.g. the NaN watchdog)
        self.watch: TraceFn | None = None

        # One allocation budget for the whole flow; a node that cannot be built is a
        # SpecError at its line, never a torch traceback (flowspec/construct.py).
        build = Construction()
        self.nodes = nn.ModuleDict()
        by_id = {n.id: n for n in graph.nodes}
        for nid in analysis.forward_order:
            self.nodes[_module_key(nid)] = build.node(
                by_id[nid], analysis.node_in_shapes[nid], self.node_context_shape
            )
        self.priors = nn.ModuleDict()
        for lat in graph.latents:
            self.priors[_module_key(lat.id)] = build.prior(
                lat,
                analysis.shapes[lat.input],
                self.node_context_shape,
                analysis.shapes[lat.cond] if lat.cond else None,
            )
        build.check_finite()
        from flowspec.dequantize import build_dequantizer

        #: model.dequantize: the learned noise q(u | x) of Flow++ (log_prob is then the
        #: variational bound, see flowspec.dequantize)
        self.dequantizer = build_dequantizer(graph, Flow)
        self.latent_names = [lat.id for lat in graph.latents]
        self.latent_shapes = [tuple(analysis.shapes[lat.input]) for lat in graph.latents]
        self.port_shapes = analysis.shapes

        # Schedules resolved once to (module, ports) tuples: the walk does no lookups by name.
        self._fwd = [
            (nid, self.nodes[_module_key(nid)], by_id[nid].inputs, by_id[nid].outputs)
            for nid in analysis.forward_order
        ]
        self._lat = [
            (lat.id, self.priors[_module_key(lat.id)], lat.input, lat.cond) for lat in graph.latents
        ]
        lat_by_id = {t[0]: t for t in self._lat}
        fwd_by_id = {t[0]: t for t in self._fwd}
        self._inv = [
            (kind, fwd_by_id[iid] if kind == "node" else lat_by_id[iid])
            for kind, iid in analysis.inverse_order
        ]
        # Ports a walk may forget after each step (consumed, and not read by a prior),
        # so intermediate tensors are freed as in a hand-written loop, not held to the end.
        keep = {graph.input_port} | {t[2] for t in self._lat} | {t[3] for t in self._lat if t[3]}
        self._fwd_drop = [tuple(p for p in ins if p not in keep) for _, _, ins, _ in self._fwd]
        self._inv_drop = [
            tuple(p for p in item[3] if p not in keep) if kind == "node" else ()
            for kind, item in self._inv
        ]

    # -- context -------------------------------------------------------------------
    def prepare_context(self, context: Any, batch: int) -> torch.Tensor | None:
        """Class labels -> one-hot floats; a single label or vector is broadcast to the batch;
        then the context net, if any, embeds it (once per call, for all nodes and priors)."""
        ctx = self._context_tensor(context, batch)
        if ctx is not None and self.context_standardizer is not None:
            ctx = self.context_standardizer(ctx)
        if ctx is not None and self.context_net is not None:
            return self.context_net(ctx)
        return ctx

    def _context_tensor(self, context: Any, batch: int) -> torch.Tensor | None:
        if self.context_shape is None:
            if context is not None:
                raise FlowspecError("this flow takes no context, but one was given",
                                    hint="remove the context, or declare model.context")
            return None
        if context is None:
            raise FlowspecError("this flow is conditional: pass a context (model.context)")
        ref = self.reference_tensor()
        if self.num_classes is not None:
            labels = torch.as_tensor(context, device=ref.device).long()
            if labels.dim() == 0:
                labels = labels.expand(batch)
            if labels.dim() == 2 and labels.shape[1] == self.num_classes:  # already one-hot
                return labels.to(ref.dtype)
            return nn.functional.one_hot(labels, self.num_classes).to(ref.dtype)
        ctx = _as_float(context, ref, "context")
        shape = tuple(self.context_shape)
        dims = ", ".join(map(str, shape))
        want = f"[{batch}, {dims}] (or one context [{dims}] for all)"
        if ctx.dim() == 0 and math.prod(shape) == 1:  # sample(n, context=150.0)
            ctx = ctx.reshape(shape)
        if shape == (1,) and ctx.dim() == 1 and ctx.shape[0] == batch != 1:  # one per row
            ctx = ctx[:, None]
        # (dims first: comparing a traced batch size with a context's size would guard it)
        if ctx.dim() == len(shape) and tuple(ctx.shape) == shape:  # one for every example
            return ctx.expand(batch, *shape)
        if ctx.dim() == len(shape) + 1 and tuple(ctx.shape[1:]) == shape:
            # one per example first: a traced (exported) flow's symbolic batch then needs
            # no guard on its size
            if ctx.shape[0] == batch:
                return ctx
            if ctx.shape[0] == 1:  # context=[[150.0]]: broadcast to the batch
                return ctx.expand(batch, *shape)
            raise FlowspecError(f"the context has {ctx.shape[0]} rows for {batch} examples",
                                hint=f"give one context row per example, {want}")
        raise FlowspecError(f"the context has shape {list(ctx.shape)}; this flow takes {want}",
                            hint=f"model.context is {{shape: {list(shape)}}}")

    def _data_input(self, x: Any, what: str = "x") -> torch.Tensor:
        """User data -> a tensor of the flow's dtype and device, ``[N, *input_shape]``:
        numpy arrays, lists and float64 tensors are accepted; a wrong shape names the
        expected one."""
        if torch.is_tensor(x) and x.dtype == self.reference_tensor().dtype and \
                tuple(x.shape[1:]) == self.input_shape and x.dim() == len(self.input_shape) + 1:
            return x  # the training path: nothing to convert
        t = _as_float(x, self.reference_tensor(), what)
        if t.dim() != len(self.input_shape) + 1 or tuple(t.shape[1:]) != self.input_shape:
            dims = ", ".join(map(str, self.input_shape))
            one = (f"; for one example use x[None] (shape [1, {dims}])"
                   if tuple(t.shape) == self.input_shape else "")
            raise FlowspecError(f"{what} has shape {list(t.shape)}; this flow takes [N, {dims}] "
                                f"(N examples of model.input [{dims}]){one}")
        return t

    def reference_tensor(self) -> torch.Tensor:
        """A tensor on the flow's device with its dtype (its first weight, else buffer,
        else a CPU float32 scalar): what inputs, noise and grids are made like."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            return t
        return torch.zeros(())

    _reference_tensor = reference_tensor  # the old private name, for code written before

    # -- walks -----------------------------------------------------------------------
    def _run(self, fn: Callable, inp: Any, context: Any):
        if ((self.checkpoint_grads or self.memory == "checkpoint") and self.training
                and torch.is_grad_enabled()):
            return checkpoint(fn, inp, context, use_reentrant=False)
        return fn(inp, context)

    def _forward_plan(self, x: torch.Tensor, trace: TraceFn | None):
        """The nodes to run forwards: one by one, or grouped into invertible chains."""
        if (self.memory != "invertible" or trace is not None or not self.training
                or not torch.is_grad_enabled()):
            return self._fwd, self._fwd_drop
        from flowspec import memory

        if self._memory_plan is None:
            self._memory_plan = memory.forward_plan(self), memory.checkpoint_plan(self)
        # In bf16/fp16 no inverse is exact: said once, then run as train.memory: checkpoint.
        return self._memory_plan[1 if memory.inexact_here(x) else 0]

    def _forward_walk(self, x: torch.Tensor, context: torch.Tensor | None, trace: TraceFn | None):
        vals: dict[str, Any] = {self.graph.input_port: x}
        # Log-dets accumulate in at least float32, also when autocast makes nodes emit bf16.
        logdet = upcast(x.new_zeros(x.shape[0]))
        trace = trace or self.watch
        for (nid, node, ins, outs), drop in zip(*self._forward_plan(x, trace)):
            inp = vals[ins[0]] if len(ins) == 1 else tuple(vals[p] for p in ins)
            for p in drop:
                del vals[p]
            y, ld = self._run(node, inp, context)
            logdet = logdet + ld
            if len(outs) == 1:
                vals[outs[0]] = y
            else:
                vals.update(zip(outs, y))
            if trace is not None:
                trace(nid, inp, y, ld)
        return vals, logdet

    def _inverse_walk(
        self,
        given: dict[str, torch.Tensor] | None,
        n: int,
        temperature: float,
        context: torch.Tensor | None,
        trace: TraceFn | None,
        noise: dict[str, torch.Tensor] | None = None,
    ):
        vals: dict[str, Any] = {}
        latents: dict[str, torch.Tensor] = {}
        logdet: torch.Tensor | None = None
        trace = trace or self.watch
        for (kind, item), drop in zip(self._inv, self._inv_drop):
            if kind == "latent":
                lid, prior, port, cond = item
                if given is not None:
                    z = given[lid]
                elif noise is not None:  # deterministic sampling (exported programs)
                    z = prior.from_noise(noise[lid], temperature, context,
                                         vals[cond] if cond else None)
                else:
                    z = prior.sample(n, temperature, context, vals[cond] if cond else None)
                latents[lid] = z
                vals[port] = z
                continue
            nid, node, ins, outs = item
            y = vals[outs[0]] if len(outs) == 1 else tuple(vals[p] for p in outs)
            for p in drop:
                del vals[p]
            x, ld = self._run(node.inverse, y, context)
            logdet = upcast(ld) if logdet is None else logdet + ld
            if len(ins) == 1:
                vals[ins[0]] = x
            else:
                vals.update(zip(ins, x))
            if trace is not None:
                trace(nid, y, x, ld)
        x = vals[self.graph.input_port]
        if logdet is None:
            logdet = x.new_zeros(x.shape[0])
        return x, logdet, latents, vals

    def _pack(self, latents: dict[str, torch.Tensor]) -> Latents:
        zs = tuple(latents[name] for name in self.latent_names)
        return zs[0] if len(zs) == 1 else zs

    def _unpack(self, z: Latents) -> dict[str, torch.Tensor]:
        zs = (z,) if isinstance(z, torch.Tensor) else tuple(z)
        if len(zs) != len(self.latent_names):
            raise ValueError(f"expected {len(self.latent_names)} latents, got {len(zs)}")
        return dict(zip(self.latent_names, zs))

    def _latent_log_prob(self, vals: dict[str, Any], context: torch.Tensor | None) -> torch.Tensor:
        total = None
        for _, prior, port, cond in self._lat:
            # A prior's log-density sums over every dimension: never in bf16/fp16.
            lp = run_fp32(prior.log_prob, vals[port], context, vals[cond] if cond else None)
            total = lp if total is None else total + lp
        return total  # type: ignore[return-value]

    # -- public API ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, context: Any = None) -> tuple[Latents, torch.Tensor]:
        """Data -> latents: ``(z, log|det dz/dx|)``."""
        x = self._data_input(x)
        ctx = self.prepare_context(context, x.shape[0])
        vals, logdet = self._forward_walk(x, ctx, None)
        return self._pack({lid: vals[port] for lid, _, port, _ in self._lat}), logdet

    def inverse(self, z: Latents, context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents -> data: ``(x, log|det dx/dz|)``."""
        given = self._unpack(z)
        n = next(iter(given.values())).shape[0]
        ctx = self.prepare_context(context, n)
        x, logdet, _, _ = self._inverse_walk(given, n, 1.0, ctx, None)
        return x, logdet

    def encode(self, x: torch.Tensor, context: Any = None) -> Latents:
        return self.forward(x, context)[0]

    def decode(self, z: Latents, context: Any = None) -> torch.Tensor:
        return self.inverse(z, context)[0]

    def log_prob(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        """``log p(x)`` per example: prior log-density of the latents plus the log-dets.

        ``x``: ``[N, *model.input]`` as a tensor, numpy array or nested list (cast to the
        flow's dtype); ``context``: one per example, or one for all. With
        ``model.dequantize`` (variational), ``x`` are bin centres and the value is one draw
        of the variational bound ``log p(x + u) - log q(u | x)``, ``u ~ q``."""
        x = self._data_input(x)
        ctx = self.prepare_context(context, x.shape[0])
        if self.dequantizer is not None:  # bin centres -> x + u, u ~ q(u | x): the bound
            x, log_q = self.dequantizer(x)
            vals, logdet = self._forward_walk(x, ctx, None)
            return self._latent_log_prob(vals, ctx) + logdet - log_q
        vals, logdet = self._forward_walk(x, ctx, None)
        return self._latent_log_prob(vals, ctx) + logdet

    # Sampling methods take ``n`` positionally and everything else by keyword:
    # ``flow.sample(64, temperature=0.7, context=labels)`` (one order for all of them).
    def sample(self, n: int, *, temperature: float = 1.0, context: Any = None,
               grad: bool = False) -> torch.Tensor:
        """``n`` samples (latent -> data) at ``temperature`` (scales the priors' spread).

        ``context``: one for all samples (``150.0``, ``[150.0]``, ``[[150.0]]``) or one
        per sample. Drawn without autograd (``flow.sample(1000).numpy()`` works) unless
        ``grad=True``."""
        n = _count(n)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            ctx = self.prepare_context(context, n)
            return self._inverse_walk(None, n, temperature, ctx, None)[0]

    def sample_from_noise(self, noise: Latents, *, temperature: float = 1.0,
                          context: Any = None) -> torch.Tensor:
        """Samples decoded from given base noise (one tensor per latent, shaped like the
        latents; each prior maps its standard noise to a latent): deterministic, so an
        exported sampler takes the noise as an input."""
        given = self._unpack(noise)
        n = next(iter(given.values())).shape[0]
        ctx = self.prepare_context(context, n)
        return self._inverse_walk(None, n, temperature, ctx, None, noise=given)[0]

    def sample_with_latents(self, n: int, *, temperature: float = 1.0, context: Any = None,
                            grad: bool = False) -> tuple[torch.Tensor, Latents]:
        """Samples and the latents they were decoded from (no autograd unless ``grad``)."""
        n = _count(n)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            ctx = self.prepare_context(context, n)
            x, _, latents, _ = self._inverse_walk(None, n, temperature, ctx, None)
        return x, self._pack(latents)

    def sample_and_log_prob(self, n: int, *, temperature: float = 1.0,
                            context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density under the flow (the reverse-KL estimator's input)."""
        ctx = self.prepare_context(context, n)
        x, logdet, _, vals = self._inverse_walk(None, n, temperature, ctx, None)
        return x, self._latent_log_prob(vals, ctx) - logdet

    def trace_forward(self, x: torch.Tensor, context: Any = None) -> list[tuple[str, Any]]:
        """Every node's output on the way data -> latent (same walk, with a hook)."""
        out: list[tuple[str, Any]] = []
        self._forward_walk(x, self.prepare_context(context, x.shape[0]),
                           lambda nid, inp, y, ld: out.append((nid, y)))
        return out

    def trace_inverse(
        self, n: int, *, temperature: float = 1.0, context: Any = None,
        z: Latents | None = None,
    ) -> list[tuple[str, Any]]:
        """Every node's output on the way latent -> data (sampling unless ``z`` is given)."""
        out: list[tuple[str, Any]] = []
        given = self._unpack(z) if z is not None else None
        ctx = self.prepare_context(context, n)
        self._inverse_walk(given, n, temperature, ctx,
                           lambda nid, y, x, ld: out.append((nid, x)))
        return out

    # -- latent helpers ---------------------------------------------------------------------
    @property
    def num_dims(self) -> int:
        d = 1
        for s in self.input_shape:
            d *= s
        return d

    def flatten_latents(self, z: Latents) -> torch.Tensor:
        """All latents of each example as one vector ``[batch, D]``."""
        zs = (z,) if isinstance(z, torch.Tensor) else tuple(z)
        return torch.cat([t.reshape(t.shape[0], -1) for t in zs], dim=1)

    def unflatten_latents(self, flat: torch.Tensor) -> Latents:
        parts, start = [], 0
        for shape in self.latent_shapes:
            size = 1
            for s in shape:
                size *= s
            parts.append(flat[:, start:start + size].reshape(flat.shape[0], *shape))
            start += size
        return parts[0] if len(parts) == 1 else tuple(parts)

    def data_fit_items(self) -> Sequence[tuple[str, nn.Module]]:
        """Modules fitted to training statistics before the first step, in the order data
        reaches them: the context standardization, then the nodes
        (:mod:`flowspec.data_statistics`)."""
        head = ([("context standardization", self.context_standardizer)]
                if self.context_standardizer is not None else [])
        return [*head, *self.node_items()]

    def node_items(self) -> Sequence[tuple[str, nn.Module]]:
        """(id, module) in forward order."""
        return [(nid, node) for nid, node, _, _ in self._fwd]
