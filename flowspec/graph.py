"""The Graph IR: bijector nodes joined by named ports, ending in latent nodes.

The spec layer lowers every YAML form (sequential lists, ``repeat``, blocks,
explicit graphs) to this one structure. :func:`analyse` then checks it before
any tensor exists -- unknown types, arity, dangling inputs, ports used twice or
never, cycles, shapes -- and derives the two schedules the compiler runs:

* the **forward** schedule (data -> latents): a topological order of the nodes;
* the **inverse** schedule (latents -> data): nodes in reverse dependency order,
  with each latent placed after whatever its ``cond`` port needs, so a prior
  conditioned on a kept half (Glow's split) is sampled once that half exists.

Every port is produced once and consumed once by a node or a latent (a
bijection cannot copy a tensor); a latent may additionally *read* a port as its
``cond``. The data enters at ``input_port`` ("x").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flowspec.bijectors import NODES
from flowspec.distributions import PRIORS
from flowspec.errors import Location, Problem, ShapeError, SpecError, UnknownNameError

Shape = tuple[int, ...]
INPUT_PORT = "x"


@dataclass
class NodeIR:
    id: str
    type: str
    params: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    path: str = ""
    loc: Location | None = None


@dataclass
class LatentIR:
    id: str
    prior: str
    params: dict[str, Any]
    input: str
    cond: str | None = None
    path: str = ""
    loc: Location | None = None


@dataclass
class ContextIR:
    """The flow's condition: class labels (one-hot inside the flow) or a float tensor,
    optionally embedded once by ``net`` into ``features`` numbers (``model.context_net``)."""

    num_classes: int | None = None
    shape: Shape | None = None
    net: Any = None
    features: int | None = None
    #: a vector context is standardized with training statistics inside the flow
    standardize: bool = True

    @property
    def tensor_shape(self) -> Shape:
        """The context as given to the flow (labels one-hot)."""
        return (self.num_classes,) if self.num_classes is not None else tuple(self.shape or ())

    @property
    def node_shape(self) -> Shape:
        """What every node and prior sees: the embedding's shape when there is a net."""
        return (int(self.features),) if self.net is not None else self.tensor_shape


@dataclass
class GraphIR:
    input_shape: Shape
    nodes: list[NodeIR]
    latents: list[LatentIR]
    context: ContextIR | None = None
    input_port: str = INPUT_PORT
    file: str | None = None
    #: ``model.dequantize: {variational: ...}``: the graph of q(u | x) (context: x), and
    #: the number of levels of the discrete data (set from ``data.preprocess``)
    dequantizer: GraphIR | None = None
    levels: int | None = None


@dataclass
class Analysis:
    """What :func:`analyse` derives: shapes of every port and both schedules."""

    shapes: dict[str, Shape | tuple[Shape, ...]]
    forward_order: list[str]
    #: items ("node", id) or ("latent", id), in the order the inverse runs them.
    inverse_order: list[tuple[str, str]]
    node_in_shapes: dict[str, Any] = field(default_factory=dict)


def _toposort(deps: dict[Any, list[Any]]) -> tuple[list[Any], list[Any]]:
    """Kahn's algorithm in O(nodes + edges); returns (order, members of cycles).

    Ties keep declaration order (a FIFO of ready items), so a chain is scheduled as
    written. Dependencies on keys outside ``deps`` are ignored.
    """
    waiting = {k: 0 for k in deps}
    users: dict[Any, list[Any]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in dict.fromkeys(ds):  # a node reading two ports of one producer waits once
            if d in users:
                users[d].append(k)
                waiting[k] += 1
    ready = deque(k for k in deps if not waiting[k])
    order: list[Any] = []
    while ready:
        k = ready.popleft()
        order.append(k)
        for u in users[k]:
            waiting[u] -= 1
            if not waiting[u]:
                ready.append(u)
    if len(order) == len(deps):
        return order, []
    return order, [k for k in deps if waiting[k]]


def _shape_str(shape: Any) -> str:
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return ", ".join(_shape_str(s) for s in shape)
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _port_hint(port: str, producer: dict[str, str]) -> str:
    """'did you mean' among the known ports (a short list of them if nothing is close)."""
    from flowspec.registry import did_you_mean

    known = sorted(producer)
    sug = did_you_mean(port, known)
    if sug:
        return f"did you mean '{sug[0]}'?"
    shown = known if len(known) <= 20 else [*known[:20], f"... ({len(known)} in all)"]
    return f"known ports: {', '.join(shown)}"


def analyse(graph: GraphIR) -> Analysis:
    """Check ``graph``, derive shapes and schedules; raise :class:`SpecError` with all problems."""
    problems: list[Problem] = []

    def bad(message: str, item: NodeIR | LatentIR | None = None, hint: str | None = None) -> None:
        loc = item.loc if item is not None else Location(graph.file)
        problems.append(Problem(message, item.path if item is not None else "model", loc, hint))

    # -- ids, types, arity -------------------------------------------------------
    seen_ids: set[str] = set()
    entries = {}
    for item in [*graph.nodes, *graph.latents]:
        if item.id in seen_ids:
            bad(f"duplicate id '{item.id}'", item, "give every node a unique id")
        seen_ids.add(item.id)
    for node in graph.nodes:
        try:
            entries[node.id] = NODES.get(node.type)
        except UnknownNameError as err:
            bad(err.message, node)
            continue
        cls = entries[node.id].obj
        if len(node.inputs) != cls.n_in:
            bad(f"'{node.type}' takes {cls.n_in} input(s), got {len(node.inputs)}", node)
        if len(node.outputs) != cls.n_out:
            bad(f"'{node.type}' gives {cls.n_out} output(s), got {len(node.outputs)}", node)
    prior_entries = {}
    for lat in graph.latents:
        try:
            prior_entries[lat.id] = PRIORS.get(lat.prior)
        except UnknownNameError as err:
            bad(err.message, lat)
            continue
        cls = prior_entries[lat.id].obj
        if cls.needs_cond and lat.cond is None:
            bad(f"prior '{lat.prior}' needs a 'cond' port to condition on", lat)
        if lat.cond is not None and not cls.needs_cond:
            bad(f"prior '{lat.prior}' takes no 'cond' port", lat,
                "use a conditional prior such as 'conditional_gaussian'")
        if cls.needs_context and graph.context is None:
            bad(f"prior '{lat.prior}' reads the flow's context, but model.context is not set", lat)
    if not graph.latents:
        problems.append(Problem("the graph has no latent node", "model", Location(graph.file),
                                "end the flow with a prior"))

    # -- ports: produced once, consumed once --------------------------------------
    producer: dict[str, str] = {graph.input_port: "<input>"}
    for node in graph.nodes:
        for p in node.outputs:
            if p in producer:
                bad(f"port '{p}' is produced twice", node, "rename one of the outputs")
            producer[p] = node.id
    consumer: dict[str, str] = {}
    dangling = 0
    for item in [*graph.nodes, *graph.latents]:
        ins = item.inputs if isinstance(item, NodeIR) else [item.input]
        for p in ins:
            if p not in producer:
                dangling += 1  # suggestions cost O(ports) each: only for the first few
                bad(f"input '{p}' is not produced by any node", item,
                    _port_hint(p, producer) if dangling <= 20 else None)
            elif p in consumer:
                bad(f"port '{p}' is already consumed by '{consumer[p]}'", item,
                    "a bijection cannot copy a tensor; use 'cond' to read a port in a prior")
            else:
                consumer[p] = item.id
        if isinstance(item, LatentIR) and item.cond is not None and item.cond not in producer:
            bad(f"cond port '{item.cond}' is not produced by any node", item)
    by_id = {n.id: n for n in graph.nodes}
    for port, prod in producer.items():
        if port not in consumer:
            bad(f"output '{port}' is never consumed", by_id.get(prod),
                "send it to a latent node or another bijector")
    if problems:
        raise SpecError(problems)

    # -- forward order (cycles named) ---------------------------------------------
    lat_by_id = {lat.id: lat for lat in graph.latents}
    fwd_deps = {
        n.id: [producer[p] for p in n.inputs if producer[p] != "<input>"] for n in graph.nodes
    }
    forward_order, cyclic = _toposort(fwd_deps)
    if cyclic:
        shown = cyclic if len(cyclic) <= 12 else [*cyclic[:12], f"... ({len(cyclic)} nodes)"]
        for nid in cyclic:
            bad(f"node is part of a cycle: {' -> '.join(shown)}", by_id[nid],
                "a flow graph must be acyclic")
        raise SpecError(problems)

    # -- shapes ------------------------------------------------------------------
    shapes: dict[str, Any] = {graph.input_port: tuple(graph.input_shape)}
    node_in_shapes: dict[str, Any] = {}
    for nid in forward_order:
        node = by_id[nid]
        if any(p not in shapes for p in node.inputs):
            continue  # upstream failed; reported there
        ins = tuple(shapes[p] for p in node.inputs)
        in_shape = ins[0] if len(ins) == 1 else ins
        node_in_shapes[nid] = in_shape
        entry = entries[nid]
        try:
            out = entry.obj.out_shape(in_shape, **entry.with_defaults(node.params))
        except ShapeError as err:
            bad(f"{err} (input shape {_shape_str(in_shape)})", node)
            continue
        except (TypeError, ValueError) as err:
            bad(f"cannot apply '{node.type}' to input shape {_shape_str(in_shape)}: {err}", node)
            continue
        outs = (tuple(out),) if len(node.outputs) == 1 else tuple(tuple(o) for o in out)
        for p, s in zip(node.outputs, outs):
            shapes[p] = s
    if problems:
        raise SpecError(problems)

    # -- inverse schedule -----------------------------------------------------------
    # In the inverse, port p's value is rebuilt by whatever consumed it forwards.
    def rebuilder(port: str) -> tuple[str, str]:
        cid = consumer[port]
        return ("latent", cid) if cid in lat_by_id else ("node", cid)

    inv_deps: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for node in graph.nodes:
        inv_deps[("node", node.id)] = [rebuilder(p) for p in node.outputs]
    for lat in graph.latents:
        inv_deps[("latent", lat.id)] = [rebuilder(lat.cond)] if lat.cond else []
    inv_order, stuck = _toposort(inv_deps)  # type: ignore[arg-type]
    if stuck:
        for kind, iid in stuck:
            if kind == "latent":
                bad(f"latent '{iid}' is conditioned on '{lat_by_id[iid].cond}', which can only be "
                    "reconstructed after this latent is sampled", lat_by_id[iid],
                    "condition on a port that leaves the graph later")
        if not problems:
            bad("the graph cannot be inverted: circular dependency through latent conditions")
        raise SpecError(problems)
    return Analysis(shapes, forward_order, inv_order, node_in_shapes)  # type: ignore[arg-type]
