"""Lowering ``model`` to the Graph IR: unrolling repeats, inlining blocks, factor_out.

Every YAML form becomes :class:`~flowspec.graph.NodeIR` and
:class:`~flowspec.graph.LatentIR` items with

* ids that are readable, stable and unique: the position in the unrolled
  structure, then the node's name (``flow.1.0.affine_coupling`` is item 1 of
  ``model.flow``, a repeat, iteration 0; a body or block of a single item adds no
  index). The end of a sequential flow leaves at latent ``z``; a factor_out at
  ``flow.3`` leaves at ``flow.3.factor_out`` after node ``flow.3.split``;
* ``path``: where the item is *written* (``model.flow[1].body[0].affine_coupling``,
  or ``blocks.glow_step.flow[2].inv_conv1x1`` for a node inside a block), and
  ``loc``: its file:line:col, so a problem in a repeated body is reported once,
  at the line to edit.

Ports: in a chain each node's output port is named after the node; in a graph,
an item's single output is named by its ``id`` (multi-output nodes default to
``id.0``, ``id.1``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flowspec.errors import Location, ShapeError
from flowspec.graph import INPUT_PORT, ContextIR, GraphIR, LatentIR, NodeIR
from flowspec.registry import Registry, did_you_mean, split_named
from flowspec.spec import schema as S
from flowspec.spec.expand import Expander
from flowspec.spec.expr import IDENT_RE
from flowspec.spec.limits import MAX_INPUT_ELEMENTS, LimitReached, UnrollBudget
from flowspec.spec.problems import Problems, join_path
from flowspec.spec.source import LDict, child_loc, plain
from flowspec.spec.validate import Validator, show

_REQUIRED = object()
_MAX_REPEAT = 100_000
_SHAPE = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}}
_COUNT = {"type": "integer", "minimum": 0, "maximum": _MAX_REPEAT}


@dataclass
class BlockDef:
    name: str
    params: dict[str, Any]  # name -> default, or _REQUIRED
    flow: list
    path: str  # where its flow list is written
    loc: Location | None


class Lowerer:
    """Lowers one resolved ``model`` section; problems go to ``problems``."""

    def __init__(self, problems: Problems, validator: Validator, expander: Expander,
                 vars_env: dict[str, Any], nodes: Registry, priors: Registry,
                 file: str | None = None):
        self.problems = problems
        self.validator = validator
        self.expander = expander
        self.vars = vars_env
        self.NODES, self.PRIORS = nodes, priors
        self.file = file
        self.nodes: list[NodeIR] = []
        self.latents: list[LatentIR] = []
        self.aliases: dict[str, str] = {}
        self.blocks: dict[str, BlockDef] = {}
        self.budget = UnrollBudget(problems)

    def add_node(self, node: NodeIR) -> None:
        self.nodes.append(node)
        self.budget.item(node.id, node.path, node.loc)

    def add_latent(self, latent: LatentIR) -> None:
        self.latents.append(latent)
        self.budget.item(latent.id, latent.path, latent.loc)

    # -- helpers -------------------------------------------------------------------------------
    def bad(self, message: str, path: str, loc: Location | None, hint: str | None = None) -> None:
        self.problems.add(message, path, loc, hint)

    def ev(self, value: Any, env: dict[str, Any], path: str, loc: Location | None) -> Any:
        """``value`` with every expression evaluated in ``env`` (vars and bound locals)."""
        return self.expander.substitute(value, env, path, loc)

    def keys(self, item: dict, allowed: tuple[str, ...], path: str, what: str) -> None:
        for key in item:
            if key not in allowed:
                sug = did_you_mean(str(key), list(allowed))
                self.bad(f"unknown key '{key}' in {what}", join_path(path, key),
                         item.key_loc(key) if isinstance(item, LDict) else None,
                         f"did you mean '{sug[0]}'?" if sug else "known keys: "
                         + ", ".join(allowed))

    def count(self, value: Any, env: dict, path: str, loc: Location | None) -> int | None:
        n = self.ev(value, env, path, loc)
        if isinstance(n, str) and "${" in n:
            return None  # reported by the substitution
        return n if self.validator.check(n, _COUNT, path, loc) else None

    # -- blocks --------------------------------------------------------------------------------
    def parse_blocks(self, raw: Any, loc: Location | None) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.bad("expected a mapping of block names to {params, flow}", "blocks", loc)
            return
        for name, body in raw.items():
            bpath, bloc = join_path("blocks", name), child_loc(raw, name) or loc
            if not IDENT_RE.match(str(name)):
                self.bad(f"'{name}' is not a valid block name", bpath, raw.key_loc(name),
                         "use letters, digits and _, starting with a letter")
            if isinstance(body, list):
                self.blocks[name] = BlockDef(name, {}, body, bpath, bloc)
                continue
            if not isinstance(body, dict):
                self.bad("expected {params: ..., flow: [...]} or a list of nodes", bpath, bloc)
                continue
            self.keys(body, ("params", "flow", "description"), bpath, f"block '{name}'")
            flow = body.get("flow")
            if not isinstance(flow, list):
                self.bad("a block needs flow: [a list of nodes]" if flow is None else
                         f"expected a list of nodes, got {show(flow)}",
                         join_path(bpath, "flow"), child_loc(body, "flow") or bloc)
                continue
            params = self._block_params(body.get("params"), join_path(bpath, "params"),
                                        child_loc(body, "params") or bloc)
            self.blocks[name] = BlockDef(name, params, flow, join_path(bpath, "flow"), bloc)

    def _block_params(self, raw: Any, path: str, loc: Location | None) -> dict[str, Any]:
        if raw is None:
            return {}
        if isinstance(raw, dict):
            names, params = list(raw), dict(raw)
            locs = [raw.key_loc(k) if isinstance(raw, LDict) else loc for k in raw]
        elif isinstance(raw, list) and all(isinstance(p, str) for p in raw):
            names, params = list(raw), {p: _REQUIRED for p in raw}
            locs = [child_loc(raw, i) or loc for i in range(len(raw))]
        else:
            self.bad("expected parameters with defaults {name: default} or a list of "
                     f"required names, got {show(raw)}", path, loc)
            return {}
        for name, ploc in zip(names, locs):
            if not IDENT_RE.match(str(name)):
                self.bad(f"'{name}' is not a valid parameter name", join_path(path, name), ploc)
        return params

    def call_block(self, item: dict, path: str, loc: Location | None, port: str, prefix: str,
                   env: dict, stack: list[str]) -> str:
        bloc = child_loc(item, "block") or loc
        name = self.ev(item["block"], env, join_path(path, "block"), bloc)
        if not isinstance(name, str):
            self.bad(f"expected a block name, got {show(name)}", join_path(path, "block"), bloc)
            return port
        if name not in self.blocks:
            self.validator.unknown("block", name, sorted(self.blocks), join_path(path, "block"),
                                   bloc)
            return port
        self.budget.step(path, loc)
        if name in stack:
            self.bad(f"block '{name}' uses itself ({' -> '.join([*stack, name])})",
                     join_path(path, "block"), bloc, "blocks cannot be recursive")
            return port
        block = self.blocks[name]
        apath, aloc = join_path(path, "args"), child_loc(item, "args") or loc
        args = self.ev(item.get("args"), env, apath, aloc)
        if args is None:
            args = {}
        if not isinstance(args, dict):
            self.bad(f"expected a mapping of arguments, got {show(args)}", apath, aloc)
            return port
        benv = dict(self.vars)
        missing = False
        for pname, default in block.params.items():
            if pname in args:
                benv[pname] = args[pname]
            elif default is _REQUIRED:
                missing = True
                self.bad(f"block '{name}' needs argument '{pname}'", path, loc,
                         f"add args: {{{pname}: ...}}")
            else:
                benv[pname] = default
        for aname in args:
            if aname not in block.params:
                sug = did_you_mean(str(aname), list(block.params))
                known = ", ".join(block.params) or "none"
                self.bad(f"unknown argument '{aname}' of block '{name}'",
                         join_path(apath, aname),
                         args.key_loc(aname) if isinstance(args, LDict) else aloc,
                         f"did you mean '{sug[0]}'?" if sug else f"its parameters: {known}")
                missing = True
        if missing:
            return port
        return self.chain(block.flow, block.path, port, prefix, benv, [*stack, name],
                          index_always=False)

    # -- chains --------------------------------------------------------------------------------
    def chain(self, items: Any, path: str, port: str, prefix: str, env: dict, stack: list[str],
              index_always: bool = True, loc: Location | None = None) -> str:
        """Lower a sequential list starting at ``port``; returns the port at its end."""
        if not isinstance(items, list):
            self.bad(f"expected a list of nodes, got {show(items)}", path,
                     getattr(items, "loc", None) or loc)
            return port
        single = len(items) == 1 and not index_always
        for k, item in enumerate(items):
            ipath, iloc = join_path(path, k), child_loc(items, k)
            port = self.item(item, ipath, iloc, port, prefix if single else f"{prefix}.{k}",
                             env, stack)
        return port

    def item(self, item: Any, path: str, loc: Location | None, port: str, prefix: str,
             env: dict, stack: list[str]) -> str:
        if isinstance(item, str) and "${" in item:
            item = self.ev(item, env, path, loc)
        if isinstance(item, dict) and "repeat" in item:
            return self.repeat(item, path, loc, port, prefix, env, stack)
        if isinstance(item, dict) and "block" in item:
            self.keys(item, ("block", "args"), path, "a block item")
            return self.call_block(item, path, loc, port, prefix, env, stack)
        if item == "factor_out" or (isinstance(item, dict) and list(item) == ["factor_out"]):
            return self.factor_out(item, path, loc, port, prefix, env)
        return self.node(item, path, loc, port, prefix, env)

    def repeat(self, item: dict, path: str, loc: Location | None, port: str, prefix: str,
               env: dict, stack: list[str]) -> str:
        self.keys(item, ("repeat", "as", "body", "block", "args"), path, "a repeat item")
        var = item.get("as")
        if var is not None and not (isinstance(var, str) and IDENT_RE.match(var)):
            self.bad(f"expected a variable name, got {show(var)}", join_path(path, "as"),
                     child_loc(item, "as") or loc)
            var = None
        has_body, has_block = "body" in item, "block" in item
        if has_body == has_block:
            self.bad("a repeat item needs either body: [...] or block: NAME", path, loc)
            return port
        if "args" in item and not has_block:
            self.bad("'args' goes with block:", join_path(path, "args"),
                     item.key_loc("args") if isinstance(item, LDict) else loc)
        if has_body and not isinstance(item["body"], list):
            self.bad(f"expected a list of nodes, got {show(item['body'])}",
                     join_path(path, "body"), child_loc(item, "body") or loc)
            return port
        n = self.count(item["repeat"], env, join_path(path, "repeat"),
                       child_loc(item, "repeat") or loc)
        if n is None:
            return port
        rpath, rloc = join_path(path, "repeat"), child_loc(item, "repeat") or loc
        for r in range(n):
            before = self.budget.mark()
            self.budget.step(path, loc)
            renv = {**env, var: r} if var else env
            if has_body:
                port = self.chain(item["body"], join_path(path, "body"), port, f"{prefix}.{r}",
                                  renv, stack, index_always=False)
            else:
                port = self.call_block(item, path, loc, port, f"{prefix}.{r}", renv, stack)
            if r == 0:
                self.budget.projected(before, n, rpath, rloc)
        return port

    def node(self, item: Any, path: str, loc: Location | None, port: str, prefix: str,
             env: dict) -> str:
        value = self.ev(item, env, path, loc)
        got = self.validator.check_named(value, self.NODES, path, loc, what="node")
        if got is None:
            return port
        name, params, entry = got
        if entry is None:
            self.bad("no nodes are installed", path, loc)
            return port
        cls = entry.obj
        if cls.n_in != 1 or cls.n_out != 1:
            self.bad(f"'{name}' takes {cls.n_in} input(s) and gives {cls.n_out} output(s); "
                     "a sequential flow needs one of each", join_path(path, name), loc,
                     "use factor_out, or write the model as an explicit graph:")
            return port
        nid = f"{prefix}.{name}"
        self.add_node(NodeIR(nid, name, plain(params), [port], [nid],
                             path=join_path(path, name), loc=loc))
        return nid

    def factor_out(self, item: Any, path: str, loc: Location | None, port: str, prefix: str,
                   env: dict) -> str:
        fpath = join_path(path, "factor_out")
        floc = child_loc(item, "factor_out") or loc if isinstance(item, dict) else loc
        params = self.ev(item.get("factor_out") if isinstance(item, dict) else None, env,
                         fpath, floc)
        if params is None:
            params = LDict.at(floc)
        if not isinstance(params, dict):
            self.bad(f"expected {{prior: ..., <{S.FACTOR_OUT_NODE} parameters>}}, got "
                     f"{show(params)}", fpath, floc)
            return port
        prior = params.get("prior", S.DEFAULT_FACTOR_OUT_PRIOR)
        ppath = join_path(fpath, "prior")
        got = self.validator.check_named(prior, self.PRIORS, ppath,
                                         child_loc(params, "prior") or floc, what="prior")
        split_params = LDict.at(floc)
        for key, value in params.items():
            if key != "prior":
                split_params.put(key, value, child_loc(params, key),
                                 params.key_loc(key) if isinstance(params, LDict) else floc)
        if S.FACTOR_OUT_NODE not in self.NODES:
            self.bad(f"factor_out needs the '{S.FACTOR_OUT_NODE}' node, which is not "
                     "installed", fpath, floc)
            return port
        entry = self.NODES.get(S.FACTOR_OUT_NODE)
        ok = self.validator.check(split_params, entry.schema, fpath, floc)
        if got is None or not ok:
            return port
        if entry.obj.n_out != 2 or entry.obj.n_in != 1:
            self.bad(f"factor_out needs '{S.FACTOR_OUT_NODE}' to have one input and two "
                     "outputs", fpath, floc)
            return port
        sid = f"{prefix}.{S.FACTOR_OUT_NODE}"
        kept, out = f"{sid}.0", f"{sid}.1"
        self.add_node(NodeIR(sid, S.FACTOR_OUT_NODE, plain(split_params), [port],
                             [kept, out], path=fpath, loc=loc))
        pname, pparams, pentry = got
        needs_cond = bool(pentry is not None and getattr(pentry.obj, "needs_cond", False))
        self.add_latent(LatentIR(f"{prefix}.factor_out", pname, plain(pparams), out,
                                 kept if needs_cond else None, path=fpath, loc=loc))
        return kept

    # -- graphs --------------------------------------------------------------------------------
    def rename_port(self, old: str, new: str, first_node: int = 0, first_latent: int = 0) -> None:
        """Rename ``old`` in the items from ``first_node``/``first_latent`` on (one chain's)."""
        def r(p: str | None) -> str | None:
            return new if p == old else p

        for n in self.nodes[first_node:]:
            n.inputs = [r(p) for p in n.inputs]  # type: ignore[misc]
            n.outputs = [r(p) for p in n.outputs]  # type: ignore[misc]
        for lat in self.latents[first_latent:]:
            lat.input = r(lat.input)  # type: ignore[assignment]
            lat.cond = r(lat.cond)

    def resolve_aliases(self) -> None:
        def r(p: str | None) -> str | None:
            seen = set()
            while p in self.aliases and p not in seen:
                seen.add(p)
                p = self.aliases[p]
            return p

        for n in self.nodes:
            n.inputs = [r(p) for p in n.inputs]  # type: ignore[misc]
        for lat in self.latents:
            lat.input = r(lat.input)  # type: ignore[assignment]
            lat.cond = r(lat.cond)

    def ports(self, value: Any, path: str, loc: Location | None) -> list[str] | None:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
            return list(value)
        self.bad(f"expected a port name or a list of port names, got {show(value)}", path, loc)
        return None

    def graph(self, items: Any, loc: Location | None) -> None:
        if not isinstance(items, list):
            self.bad(f"expected a list of graph items, got {show(items)}", "model.graph", loc)
            return
        for i, item in enumerate(items):
            self.graph_item(item, join_path("model.graph", i), child_loc(items, i) or loc)

    def graph_item(self, item: Any, path: str, loc: Location | None) -> None:
        env = self.vars
        if not isinstance(item, dict):
            self.bad("expected {id: ..., node|flow|block|latent: ..., in: ...}, got "
                     f"{show(item)}", path, loc)
            return
        self.keys(item, S.GRAPH_ITEM_KEYS, path, "a graph item")
        kinds = [k for k in ("node", "flow", "block", "latent") if k in item]
        if len(kinds) != 1:
            self.bad("a graph item needs exactly one of node, flow, block, latent"
                     + (f" (got {', '.join(kinds)})" if kinds else ""), path, loc)
            return
        kind = kinds[0]
        ok = True
        for key, allowed in (("out", ("node",)), ("cond", ("latent",)),
                             ("repeat", ("flow", "block")), ("as", ("flow", "block")),
                             ("args", ("block",))):
            if key in item and kind not in allowed:
                self.bad(f"'{key}' does not apply to a {kind} item", join_path(path, key),
                         item.key_loc(key) if isinstance(item, LDict) else loc)
                ok = False
        if "as" in item and "repeat" not in item:
            self.bad("'as' names the index of repeat:; add repeat: N", join_path(path, "as"),
                     item.key_loc("as") if isinstance(item, LDict) else loc)
            ok = False
        elif "as" in item and not (isinstance(item["as"], str) and IDENT_RE.match(item["as"])):
            self.bad(f"expected a variable name, got {show(item['as'])}", join_path(path, "as"),
                     child_loc(item, "as") or loc)
            ok = False
        nid = self.ev(item.get("id"), env, join_path(path, "id"), child_loc(item, "id") or loc)
        if not isinstance(nid, str) or not nid:
            self.bad("missing key 'id'" if nid is None else f"expected an id, got {show(nid)}",
                     path if nid is None else join_path(path, "id"),
                     loc if nid is None else child_loc(item, "id"))
            ok = False
        if "in" not in item:
            self.bad("missing key 'in'", path, loc, "name the input port(s); `x` is the data")
            return
        ipath, iloc = join_path(path, "in"), child_loc(item, "in") or loc
        ins = self.ports(self.ev(item["in"], env, ipath, iloc), ipath, iloc)
        if ins is None or not ok:
            return
        if kind == "node":
            self.graph_node(item, nid, ins, path, loc, env)
        elif kind == "latent":
            self.graph_latent(item, nid, ins, path, loc, env)
        else:
            self.graph_chain(item, kind, nid, ins, path, loc, env)

    def graph_node(self, item: dict, nid: str, ins: list[str], path: str,
                   loc: Location | None, env: dict) -> None:
        npath, nloc = join_path(path, "node"), child_loc(item, "node") or loc
        got = self.validator.check_named(self.ev(item["node"], env, npath, nloc), self.NODES,
                                         npath, nloc, what="node")
        if got is None:
            return
        name, params, entry = got
        if "out" in item:
            opath, oloc = join_path(path, "out"), child_loc(item, "out") or loc
            outs = self.ports(self.ev(item["out"], env, opath, oloc), opath, oloc)
            if outs is None:
                return
        else:
            n_out = entry.obj.n_out if entry is not None else 1
            outs = [nid] if n_out == 1 else [f"{nid}.{j}" for j in range(n_out)]
        self.add_node(NodeIR(nid, name, plain(params), ins, outs, path=path, loc=loc))

    def graph_latent(self, item: dict, nid: str, ins: list[str], path: str,
                     loc: Location | None, env: dict) -> None:
        lpath, lloc = join_path(path, "latent"), child_loc(item, "latent") or loc
        got = self.validator.check_named(self.ev(item["latent"], env, lpath, lloc), self.PRIORS,
                                         lpath, lloc, what="prior")
        cond = None
        if "cond" in item:
            cpath, cloc = join_path(path, "cond"), child_loc(item, "cond") or loc
            cond = self.ev(item["cond"], env, cpath, cloc)
            if not isinstance(cond, str):
                self.bad(f"expected a port name, got {show(cond)}", cpath, cloc)
                return
        if len(ins) != 1:
            self.bad(f"a latent takes one input port, got {len(ins)}", join_path(path, "in"),
                     child_loc(item, "in") or loc)
            return
        if got is None:
            return
        name, params, _ = got
        self.add_latent(LatentIR(nid, name, plain(params), ins[0], cond, path=path, loc=loc))

    def graph_chain(self, item: dict, kind: str, nid: str, ins: list[str], path: str,
                    loc: Location | None, env: dict) -> None:
        if len(ins) != 1:
            self.bad(f"a {kind} takes one input port, got {len(ins)}", join_path(path, "in"),
                     child_loc(item, "in") or loc)
            return
        start = port = ins[0]
        first_node, first_latent = len(self.nodes), len(self.latents)
        var = item.get("as")
        if "repeat" in item:
            n = self.count(item["repeat"], env, join_path(path, "repeat"),
                           child_loc(item, "repeat") or loc)
            if n is None:
                return
            reps: list[int | None] = list(range(n))
        else:
            reps = [None]
        for r in reps:
            before = self.budget.mark()
            if r is not None:
                self.budget.step(path, loc)
            renv = {**env, var: r} if (var and r is not None) else env
            prefix = nid if r is None else f"{nid}.{r}"
            if kind == "flow":
                port = self.chain(item["flow"], join_path(path, "flow"), port, prefix, renv, [],
                                  loc=child_loc(item, "flow") or loc)
            else:
                port = self.call_block(item, path, loc, port, prefix, renv, [])
            if r == 0:
                self.budget.projected(before, len(reps), join_path(path, "repeat"),
                                      child_loc(item, "repeat") or loc)
        if port == start:
            self.aliases[nid] = start
        else:  # the chain's end is produced (and read as a cond) only inside the chain
            self.rename_port(port, nid, first_node, first_latent)

    # -- the model -----------------------------------------------------------------------------
    def model(self, model: Any, loc: Location | None) -> GraphIR | None:
        try:
            return self._model(model, loc)
        except LimitReached:
            return None

    def _model(self, model: Any, loc: Location | None) -> GraphIR | None:
        if model is None:
            self.bad("missing section 'model'", "model", loc,
                     "add model: {input: [...], flow: [...]}")
            return None
        if not isinstance(model, dict):
            self.bad(f"expected a mapping, got {show(model)}", "model", loc)
            return None
        mloc = getattr(model, "loc", None) or loc
        self.keys(model, S.MODEL_KEYS, "model", "model")
        env = self.vars
        shape = None
        if "input" not in model:
            self.bad("missing key 'input'", "model", mloc, "the per-example shape, e.g. [2]")
        else:
            iloc = child_loc(model, "input") or mloc
            value = self.ev(model["input"], env, "model.input", iloc)
            if self.validator.check(value, _SHAPE, "model.input", iloc):
                shape = tuple(value)
                if math.prod(shape) > MAX_INPUT_ELEMENTS:
                    self.bad(f"an example of shape {show(value)} has more than "
                             f"{MAX_INPUT_ELEMENTS:,} elements", "model.input", iloc,
                             "see 'Limits' in docs/spec-language.md")
                    shape = None
        context = self.context(model.get("context"), child_loc(model, "context") or mloc)
        if "context_net" in model:
            self.context_net(context, model["context_net"], model.key_loc("context_net")
                             if isinstance(model, LDict) else mloc,
                             child_loc(model, "context_net") or mloc, "context" in model)
        has_flow, has_graph = "flow" in model, "graph" in model
        if has_flow == has_graph:
            self.bad("model needs either flow: [...] (a sequential flow) or graph: [...]"
                     if not has_flow else "give either flow: or graph:, not both", "model", mloc)
            return None
        if has_flow:
            end = self.chain(model["flow"], "model.flow", INPUT_PORT, "flow", env, [],
                             loc=child_loc(model, "flow") or mloc)
            ploc = (child_loc(model, "prior") if "prior" in model
                    else model.key_loc("flow") if isinstance(model, LDict) else None) or mloc
            prior = self.ev(model.get("prior", S.DEFAULT_PRIOR), env, "model.prior", ploc)
            got = self.validator.check_named(prior, self.PRIORS, "model.prior", ploc,
                                             what="prior")
            if got is not None:
                name, params, _ = got
                self.add_latent(LatentIR("z", name, plain(params), end, None,
                                         path="model.prior", loc=ploc))
        else:
            if "prior" in model:
                self.bad("model.prior is the prior of a sequential flow's end; a graph names "
                         "its priors in latent items", "model.prior", model.key_loc("prior"))
            self.graph(model["graph"], child_loc(model, "graph") or mloc)
        self.resolve_aliases()
        dequantizer = None
        if "dequantize" in model:
            dequantizer = self.dequantizer(model["dequantize"], shape,
                                           child_loc(model, "dequantize") or mloc)
        if shape is None:
            return None
        return GraphIR(shape, self.nodes, self.latents, context, file=self.file,
                       dequantizer=dequantizer)

    def dequantizer(self, raw: Any, shape: tuple[int, ...] | None,
                    loc: Location | None) -> GraphIR | None:
        """``model.dequantize: {variational: {flow: [...]}}`` -> the graph of q(u | x): a
        flow of the model's input shape from a standard normal, conditioned on the discrete
        example (an image context of the same shape), lowered by a fresh lowerer so its
        node ids (``dequantize.0.<node>``) never meet the model's."""
        path = "model.dequantize"
        if not isinstance(raw, dict) or set(raw) != {"variational"}:
            self.bad(f"expected {{variational: {{flow: [...]}}}}, got {show(raw)}", path, loc)
            return None
        inner = raw["variational"]
        iloc = child_loc(raw, "variational") or loc
        if not isinstance(inner, dict) or set(inner) != {"flow"}:
            self.bad(f"expected {{flow: [...nodes of q(u | x)...]}}, got {show(inner)}",
                     join_path(path, "variational"), iloc)
            return None
        sub = Lowerer(self.problems, self.validator, self.expander, self.vars, self.NODES,
                      self.PRIORS, self.file)
        sub.blocks = self.blocks
        fpath = join_path(path, "variational.flow")
        floc = child_loc(inner, "flow") or iloc
        end = sub.chain(inner["flow"], fpath, INPUT_PORT, "dequantize", self.vars, [],
                        loc=floc)
        sub.add_latent(LatentIR("z", S.DEFAULT_PRIOR, {}, end, None, path=fpath, loc=floc))
        sub.resolve_aliases()
        if shape is None:
            return None
        return GraphIR(shape, sub.nodes, sub.latents,
                       ContextIR(shape=shape, standardize=False), file=self.file)

    def context_net(self, context: ContextIR | None, raw: Any, key_loc: Location | None,
                    loc: Location | None, declared: bool) -> None:
        """``model.context_net: {net: NET, features: N}`` -> ``context.net/features``."""
        path = "model.context_net"
        if not declared:
            self.bad("context_net embeds the flow's context, but model.context is not set",
                     path, key_loc, "declare model.context: {classes: K} or {shape: [D]}")
            return
        value = self.ev(raw, self.vars, path, loc)
        schema = {"type": "object", "additionalProperties": False,
                  "required": ["net", "features"],
                  "properties": {"net": {"$ref": "#/definitions/net"},
                                 "features": {"type": "integer", "minimum": 1}}}
        if not isinstance(value, dict):
            self.bad(f"expected {{net: {{mlp: {{...}}}}, features: N}}, got {show(value)}",
                     path, loc)
            return
        if not self.validator.check(value, schema, path, loc) or context is None:
            return
        name, _ = split_named(value["net"])  # name and parameters checked by the $ref
        check = getattr(self.validator.named["net"].get(name).obj, "check_shapes", None)
        if check is not None:
            try:
                check(context.tensor_shape, (value["features"],))
            except ShapeError as err:
                self.bad(str(err), join_path(path, "net"), child_loc(value, "net") or loc)
                return
        context.net, context.features = plain(value["net"]), int(value["features"])

    def context(self, raw: Any, loc: Location | None) -> ContextIR | None:
        if raw is None:
            return None
        value = self.ev(raw, self.vars, "model.context", loc)
        schema = {"type": "object", "additionalProperties": False,
                  "minProperties": 1, "maxProperties": 2,
                  "properties": {"classes": {"type": "integer", "minimum": 1}, "shape": _SHAPE,
                                 "standardize": {"type": "boolean"}}}
        if (not isinstance(value, dict) or len(value) - ("standardize" in value) != 1
                or ("standardize" in value and "shape" not in value)):
            self.bad(f"expected {{classes: K}} or {{shape: [D, ...]}}, got {show(value)}",
                     "model.context", loc)
            return None
        if not self.validator.check(value, schema, "model.context", loc):
            return None
        size = value["classes"] if "classes" in value else math.prod(value["shape"])
        if size > MAX_INPUT_ELEMENTS:
            self.bad(f"a context of more than {MAX_INPUT_ELEMENTS:,} elements is too large",
                     "model.context", loc, "see 'Limits' in docs/spec-language.md")
            return None
        if "classes" in value:
            return ContextIR(num_classes=value["classes"])
        return ContextIR(shape=tuple(value["shape"]), standardize=value.get("standardize", True))
