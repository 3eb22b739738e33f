"""The spec's JSON Schema (draft-07), assembled from the registries.

Two uses, two strictnesses:

* **editors** (``flowspec schema``, ``# yaml-language-server: $schema=...``) see the
  spec as written, before expansion, so wherever a number, boolean, list or
  mapping is expected a ``"${...}"`` string is accepted too
  (:func:`spec_schema`);
* **loading** validates after ``${...}`` is substituted, against the registries'
  own schemas, dispatching on the name first (see :mod:`flowspec.spec.validate`),
  so a bad value gets one focused message.

Registered things (nodes, nets, priors, datasets, preprocessing steps,
energies) share one shape: a bare name, when the entry has no required
parameter, or a one-key mapping ``{name: {params}}``. A scalar may stand for the
parameters when the entry has a single parameter, or names one with
``shorthand="param"`` in its registration.
"""

from __future__ import annotations

import copy
from typing import Any

from flowspec.registry import Entry, Registry, ref

Schema = dict[str, Any]

DRAFT07 = "http://json-schema.org/draft-07/schema#"
EXPR_PATTERN = r"^\$\{.*\}$"
INTERP_PATTERN = r"\$\{.*\}"
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$"

TOP_KEYS = ("flowspec", "name", "description", "vars", "blocks", "quick",
            "data", "model", "train", "sample")
MODEL_KEYS = ("input", "context", "context_net", "prior", "flow", "graph", "dequantize",
              "description")
GRAPH_ITEM_KEYS = ("id", "node", "flow", "block", "latent", "args", "repeat", "as",
                   "in", "out", "cond")
#: the node ``factor_out`` expands to (two outputs: kept part, factored-out part).
FACTOR_OUT_NODE = "split"
DEFAULT_PRIOR = "standard_normal"
DEFAULT_FACTOR_OUT_PRIOR = "standard_normal"


def registries() -> dict[str, Registry]:
    """Definition name -> registry, for every kind of registered thing a spec names, in
    the order of a spec (the one list: the schema, the loader and the catalogue read it)."""
    import flowspec.bijectors
    import flowspec.data  # noqa: F401  (its modules register datasets and steps)
    import flowspec.distributions
    import flowspec.energies
    import flowspec.nets
    import flowspec.objectives
    from flowspec.bijectors.transformers import TRANSFORMERS
    from flowspec.data.base import DATASETS, PREPROCESS

    return {
        "node": flowspec.bijectors.NODES,
        "net": flowspec.nets.NETS,
        "transformer": TRANSFORMERS,
        "prior": flowspec.distributions.PRIORS,
        "dataset": DATASETS,
        "preprocess": PREPROCESS,
        "energy": flowspec.energies.ENERGIES,
        "objective": flowspec.objectives.OBJECTIVES,
    }


def shorthand_param(entry: Entry) -> str | None:
    """The parameter a scalar value stands for (``{dequantize: uniform}``), if any."""
    name = entry.extra.get("shorthand")
    if name:
        return str(name)
    props = entry.schema.get("properties", {})
    return next(iter(props)) if len(props) == 1 else None


# -- editor leniency --------------------------------------------------------------------------
def _only_string(s: Schema) -> bool:
    if "$ref" in s:
        return True
    return s.get("type") == "string" and not {"enum", "const", "pattern"} & set(s)


def lenient(schema: Schema) -> Schema:
    """Also accept ``"${...}"`` wherever a non-string value is expected (for editors)."""
    s = dict(schema)
    if isinstance(s.get("properties"), dict):
        s["properties"] = {k: lenient(v) for k, v in s["properties"].items()}
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = lenient(s["additionalProperties"])
    if isinstance(s.get("items"), dict):
        s["items"] = lenient(s["items"])
    elif isinstance(s.get("items"), list):
        s["items"] = [lenient(i) for i in s["items"]]
    for key in ("anyOf", "allOf"):
        if key in s:
            s[key] = [lenient(b) for b in s[key]]
    if "oneOf" in s:  # an expression would match several branches: anyOf for editors
        branches = [lenient(b) for b in s.pop("oneOf")]
        if "anyOf" in s:
            s["allOf"] = [*s.get("allOf", []), {"anyOf": branches}]
        else:
            s["anyOf"] = branches
    if _only_string(s) or not s:
        return s
    outer = {k: s.pop(k) for k in ("description", "default") if k in s}
    text = s.get("type") == "string"  # text may interpolate: "run_${K}"
    return {**outer, "anyOf": [s, ref("interpolated" if text else "expr")]}


# -- named things -----------------------------------------------------------------------------
def _entry_schema(entry: Entry, editor: bool) -> Schema:
    params = copy.deepcopy(entry.schema)
    if editor:
        params = lenient(params)
    branches = [params, {"type": "null"}]
    short = shorthand_param(entry)
    if short:
        prop = copy.deepcopy(entry.schema.get("properties", {}).get(short, {}))
        branches.append(lenient(prop) if editor else prop)
    out: Schema = {"anyOf": branches}
    if entry.doc:
        out["description"] = entry.doc
    return out


def named_schema(registry: Registry, editor: bool = True, extra: dict[str, Schema] | None = None,
                 extra_bare: tuple[str, ...] = ()) -> Schema:
    """A bare name or ``{name: params}`` of ``registry`` (any name while it is empty)."""
    entries = list(registry)
    extra = extra or {}
    desc = f"a {registry.kind}: its name, or {{name: {{parameters}}}}"
    if not entries and not extra:
        branches: list[Schema] = [
            {"type": "string"},
            {"type": "object", "minProperties": 1, "maxProperties": 1},
        ]
    else:
        props = {e.name: _entry_schema(e, editor) for e in entries}
        props.update(extra)
        bare = [e.name for e in entries if not e.schema.get("required")] + list(extra_bare)
        branches = [{"type": "object", "minProperties": 1, "maxProperties": 1,
                     "additionalProperties": False, "properties": props}]
        if bare:
            branches.insert(0, {"type": "string", "enum": sorted(bare)})
    if editor:
        branches.append(ref("expr"))
    return {"description": desc, "anyOf": branches}


# -- the model --------------------------------------------------------------------------------
def _factor_out_schema(regs: dict[str, Registry]) -> Schema:
    props: dict[str, Schema] = {
        "prior": {**ref("prior"), "description": f"prior of the factored-out part "
                  f"(default {DEFAULT_FACTOR_OUT_PRIOR}); conditioned on the kept part "
                  "when the prior needs a cond port"},
    }
    closed = False
    if FACTOR_OUT_NODE in regs["node"]:
        split = regs["node"].get(FACTOR_OUT_NODE).schema
        props.update(lenient(copy.deepcopy(split)).get("properties", {}))
        closed = split.get("additionalProperties") is False
    params = {"type": "object", "properties": props, "additionalProperties": not closed}
    return {"description": "split the tensor; the second part leaves the graph with a prior, "
                           "the chain continues with the first part",
            "anyOf": [params, {"type": "null"}]}


def _model_definitions(regs: dict[str, Registry]) -> dict[str, Schema]:
    int_or_expr = {"anyOf": [{"type": "integer", "minimum": 0}, ref("expr")]}
    ident = {"type": "string", "pattern": IDENT_PATTERN}
    ports = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    chain_item = {
        "anyOf": [
            named_schema(regs["node"], True, {"factor_out": _factor_out_schema(regs)},
                         ("factor_out",)),
            {"description": "the body N times, with the index variable `as` = 0..N-1",
             "type": "object", "required": ["repeat"], "additionalProperties": False,
             "properties": {"repeat": int_or_expr, "as": ident, "body": ref("chain"),
                            "block": {"type": "string"}, "args": ref("args")}},
            {"description": "a block's chain with its parameters bound",
             "type": "object", "required": ["block"], "additionalProperties": False,
             "properties": {"block": {"type": "string"}, "args": ref("args")}},
        ]
    }
    graph_item = {
        "type": "object",
        "required": ["id", "in"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "description": "unique name; the output port's name "
                   "when the item has one output"},
            "node": named_schema(regs["node"], True),
            "flow": ref("chain"),
            "block": {"type": "string"},
            "args": ref("args"),
            "repeat": int_or_expr,
            "as": ident,
            "latent": ref("prior"),
            "in": {**ports, "description": "input port(s); `x` is the data"},
            "out": {"type": "array", "items": {"type": "string"},
                    "description": "output port names (default id.0, id.1, ...)"},
            "cond": {"type": "string", "description": "port a latent's prior is "
                     "conditioned on (read only)"},
        },
    }
    shape = {"type": "array", "minItems": 1,
             "items": {"anyOf": [{"type": "integer", "minimum": 1}, ref("expr")]}}
    model = {
        "type": "object",
        "additionalProperties": False,
        "required": ["input"],
        "properties": {
            "input": {**shape, "description": "per-example shape of the data"},
            "context": {"description": "the flow's condition: class labels or a tensor",
                        "anyOf": [
                            {"type": "object", "additionalProperties": False,
                             "required": ["classes"],
                             "properties": {"classes": {"anyOf": [
                                 {"type": "integer", "minimum": 1}, ref("expr")]}}},
                            {"type": "object", "additionalProperties": False,
                             "required": ["shape"], "properties": {
                                 "shape": shape,
                                 "standardize": {
                                     "type": "boolean", "default": True,
                                     "description": "standardize the context with its "
                                     "training-split mean and std inside the flow, so it is "
                                     "given in natural units (false: the nets see it raw)"}}},
                        ]},
            "context_net": {
                "description": "embeds the context once (a registered net, e.g. mlp) into "
                "`features` numbers; every node and prior then sees the embedding",
                "type": "object", "additionalProperties": False, "required": ["net", "features"],
                "properties": {"net": ref("net"),
                               "features": {"anyOf": [{"type": "integer", "minimum": 1},
                                                      ref("expr")],
                                            "description": "size of the embedding"}}},
            "prior": {**ref("prior"), "description": "prior of the end of a sequential flow "
                      f"(default {DEFAULT_PRIOR})"},
            "flow": ref("chain"),
            "graph": {"type": "array", "items": graph_item},
            "dequantize": {
                "description": "Flow++ variational dequantization: a conditional flow "
                "q(u | x) over the noise u in [0, 1)^D of each discrete example, trained with "
                "the model; the NLL and bits/dim are then the variational bound "
                "E_q[-log p(x + u) + log q(u | x)] (needs data.preprocess dequantize: "
                "variational)",
                "type": "object", "additionalProperties": False, "required": ["variational"],
                "properties": {"variational": {
                    "type": "object", "additionalProperties": False, "required": ["flow"],
                    "properties": {"flow": {**ref("chain"), "description": "the nodes of "
                                            "q(u | x) from Gaussian noise to logit(u); every "
                                            "node sees the discrete image x (scaled to "
                                            "[-1, 1]) as its context"}}}}},
            "description": {"type": "string"},
        },
    }
    block = {
        "anyOf": [
            ref("chain"),
            {"type": "object", "required": ["flow"], "additionalProperties": False,
             "properties": {
                 "params": {"anyOf": [
                     {"type": "object", "propertyNames": {"pattern": IDENT_PATTERN}},
                     {"type": "array", "items": ident}],
                     "description": "parameters with defaults, or a list of required names"},
                 "flow": ref("chain"),
                 "description": {"type": "string"},
             }},
        ]
    }
    return {
        "chain": {"type": "array", "items": chain_item},
        "args": {"type": "object", "propertyNames": {"pattern": IDENT_PATTERN}},
        "block": block,
        "model": model,
    }


def spec_schema() -> Schema:
    """The full draft-07 JSON Schema of a spec as written (for editors and ``flowspec schema``)."""
    from flowspec.train.config import SAMPLE_SCHEMA, TRAIN_SCHEMA

    regs = registries()
    definitions: dict[str, Schema] = {
        "expr": {"type": "string", "pattern": EXPR_PATTERN,
                 "description": "an expression over vars, e.g. ${K} or ${2 * width}"},
        "interpolated": {"type": "string", "pattern": INTERP_PATTERN,
                         "description": "text with expressions, e.g. run_${K}"},
    }
    for kind, reg in regs.items():
        definitions[kind] = named_schema(reg, True)
    definitions.update(_model_definitions(regs))
    from flowspec.data.loader import LOADER_SCHEMA
    from flowspec.data.splits import SPLIT_SCHEMA

    data = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "dataset": {"anyOf": [ref("dataset"), {"type": "null"}]},
            "preprocess": {"type": "array", "items": ref("preprocess"),
                           "description": "density-changing preprocessing, in order"},
            **copy.deepcopy(SPLIT_SCHEMA),
            **copy.deepcopy(LOADER_SCHEMA),
        },
    }
    return {
        "$schema": DRAFT07,
        "title": "flowspec spec",
        "description": "A whole experiment: data, model (a flow of bijector nodes), train, sample.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "flowspec": {"enum": [1], "default": 1, "description": "language version"},
            "name": lenient({"type": "string", "pattern": NAME_PATTERN,
                             "description": "run name (default: the file's stem)"}),
            "description": {"type": "string"},
            "vars": {"type": "object", "propertyNames": {"pattern": IDENT_PATTERN},
                     "description": "variables, referenced anywhere as ${name}"},
            "blocks": {"type": "object", "propertyNames": {"pattern": IDENT_PATTERN},
                       "additionalProperties": ref("block"),
                       "description": "reusable sub-chains with parameters"},
            "quick": {"type": "object", "description": "dotted-path overrides for a smoke "
                      "run (--quick), e.g. {train.steps: 5}"},
            "data": data,
            "model": ref("model"),
            "train": lenient(copy.deepcopy(TRAIN_SCHEMA)),
            "sample": lenient(copy.deepcopy(SAMPLE_SCHEMA)),
        },
        "definitions": definitions,
    }
