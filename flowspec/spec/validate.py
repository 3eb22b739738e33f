"""Validation with one focused, located message per mistake.

A generic JSON-Schema validator reports a wrong parameter of one node as a
flood of failed ``oneOf`` branches (one per node type). This one dispatches on
the *name* first -- a node, net, prior, dataset ... is looked up in its registry
(an unknown name is one message with "did you mean") -- and then checks the
parameters against that one entry's schema. It walks the located data, so
every problem carries ``file:line:col`` and a dotted path, and it collects all
of them instead of stopping at the first.

It implements the part of JSON Schema the registries use: ``type``, ``enum``,
``const``, numeric bounds, string ``pattern``/lengths, ``items``, item counts,
``properties``, ``required``, ``additionalProperties``, ``propertyNames``,
``anyOf``/``oneOf``/``allOf`` and ``$ref`` to the shared definitions.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flowspec.errors import Location
from flowspec.registry import Entry, Registry, did_you_mean
from flowspec.spec.limits import MAX_INT, MAX_INT_DIGITS, digits_ok
from flowspec.spec.problems import Problems, join_path
from flowspec.spec.schema import shorthand_param
from flowspec.spec.source import LDict, child_loc

Schema = dict[str, Any]

_TYPE_WORDS = {"integer": "integer", "number": "number", "string": "text", "boolean":
               "true/false", "array": "list", "object": "mapping", "null": "null"}


def show(value: Any) -> str:
    """A value as the user wrote it, short."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        if len(value) > 20:
            return f"a list of {len(value)} items"
        try:
            text = json.dumps(value, default=str)
        except (ValueError, RecursionError):  # an integer too long to print, or too deep
            text = ""
        return text if 0 < len(text) <= 60 else f"a list of {len(value)} items"
    if isinstance(value, int) and not digits_ok(value):
        return f"an integer of more than {MAX_INT_DIGITS} digits"
    return str(value)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, t: str) -> bool:
    jt = json_type(value)
    return jt == t or (t == "number" and jt == "integer")


def _bounds(s: Schema) -> str:
    parts = []
    if "minimum" in s:
        parts.append(f">= {s['minimum']}")
    if "exclusiveMinimum" in s:
        parts.append(f"> {s['exclusiveMinimum']}")
    if "maximum" in s:
        parts.append(f"<= {s['maximum']}")
    if "exclusiveMaximum" in s:
        parts.append(f"< {s['exclusiveMaximum']}")
    return " and ".join(parts)


def describe(s: Schema, named: dict[str, Registry] | None = None) -> str:
    """What a schema expects, in words: 'integer >= 1', 'one of 'a', 'b'', ..."""
    if "$ref" in s:
        kind = s["$ref"].rsplit("/", 1)[-1]
        return f"a {kind} (a name or {{name: {{...}}}})"
    if "enum" in s:
        vals = s["enum"]
        return show(vals[0]) if len(vals) == 1 else "one of " + ", ".join(show(v) for v in vals)
    if "const" in s:
        return show(s["const"])
    for key in ("anyOf", "oneOf"):
        if key in s and "type" not in s:
            return " or ".join(dict.fromkeys(describe(b, named) for b in s[key]))
    types = s.get("type")
    if types is None:
        return "a value"
    types = types if isinstance(types, list) else [types]
    words = []
    for t in sorted(types, key=lambda t: t == "null"):
        word = _TYPE_WORDS.get(t, t)
        if t in ("integer", "number") and _bounds(s):
            word += " " + _bounds(s)
        if t == "array" and isinstance(s.get("items"), dict):
            word = f"list of {describe(s['items'], named)}"
        words.append(word)
    return " or ".join(words)


class Validator:
    """Checks located values against schemas; problems go to a :class:`Problems`."""

    def __init__(self, problems: Problems, named: dict[str, Registry],
                 definitions: dict[str, Schema] | None = None):
        self.problems = problems
        self.named = named
        self.definitions = definitions or {}

    # -- public --------------------------------------------------------------------------------
    def check(self, value: Any, schema: Schema, path: str, loc: Location | None) -> bool:
        """Validate ``value`` (written at ``loc``); report problems; True if none."""
        before = self.problems.found
        self._check(value, schema, path, loc)
        return self.problems.found == before

    def check_named(self, value: Any, registry: Registry, path: str, loc: Location | None,
                    *, what: str | None = None) -> tuple[str, Any, Entry | None] | None:
        """A registered thing written as ``name`` or ``{name: params}``.

        Returns ``(name, params, entry)`` with the params as written (a mapping,
        the shorthand expanded), or None if it is unusable. ``entry`` is None when
        the registry is empty (nothing to check against yet).
        """
        kind = what or registry.kind
        params_loc = loc
        if isinstance(value, str):
            name, params, name_loc = value, LDict.at(loc), loc
        elif isinstance(value, dict) and len(value) == 1:
            (name, params), = value.items()
            name_loc = value.key_loc(name) if isinstance(value, LDict) else loc
            params_loc = child_loc(value, name) or loc
            if params is None:
                params = LDict.at(params_loc)
        else:
            hint = None
            if isinstance(value, dict) and len(value) > 1:
                hint = (f"it has {len(value)} keys ({', '.join(map(str, value))}); "
                        "indent the parameters under the name")
            self.problems.add(f"expected a {kind}: a name or {{name: {{parameters}}}}, "
                              f"got {show(value)}", path, loc, hint)
            return None
        if not registry.names():
            return name, params, None
        if name not in registry:
            self._unknown(kind, name, registry.names(), path, name_loc)
            return None
        entry = registry.get(name)
        ppath = join_path(path, name)
        if not isinstance(params, dict):
            short = shorthand_param(entry)
            if short is None:
                self.problems.add(f"'{name}' takes a mapping of parameters, got {show(params)}",
                                  ppath, params_loc,
                                  f"write {{{name}: {{param: value}}}}")
                return None
            wrapped = LDict.at(params_loc)
            wrapped.put(short, params, params_loc, params_loc)
            params = wrapped
        if not self.check(params, entry.schema, ppath, getattr(params, "loc", None) or loc):
            return None
        return name, params, entry

    def unknown(self, kind: str, name: str, known: list[str], path: str,
                loc: Location | None) -> None:
        self._unknown(kind, name, known, path, loc)

    # -- internals -----------------------------------------------------------------------------
    def _unknown(self, kind: str, name: str, known: list[str], path: str,
                 loc: Location | None) -> None:
        sug = did_you_mean(str(name), known)
        if sug:
            hint = f"did you mean '{sug[0]}'?"
        elif known:
            shown = known if len(known) <= 25 else [*known[:25], "..."]
            hint = "known: " + ", ".join(shown)
        else:
            hint = None
        self.problems.add(f"unknown {kind} '{name}'", path, loc, hint)

    def _resolve(self, s: Schema) -> tuple[str | None, Schema | None]:
        target = s["$ref"].rsplit("/", 1)[-1]
        if target in self.named:
            return target, None
        return None, self.definitions.get(target)

    def _accepts_type(self, value: Any, s: Schema) -> bool:
        """Whether ``value``'s JSON type fits ``s`` at all (to pick the branch to report)."""
        if "$ref" in s:
            kind, target = self._resolve(s)
            if kind is not None:
                return isinstance(value, str) or (isinstance(value, dict) and len(value) == 1)
            return target is None or self._accepts_type(value, target)
        for key in ("anyOf", "oneOf"):
            if key in s:
                return any(self._accepts_type(value, b) for b in s[key])
        if "enum" in s:
            return any(json_type(value) == json_type(v) for v in s["enum"])
        if "const" in s:
            return json_type(value) == json_type(s["const"])
        t = s.get("type")
        if t is None:
            return True
        return any(_is_type(value, x) for x in (t if isinstance(t, list) else [t]))

    def _check(self, value: Any, s: Schema, path: str, loc: Location | None) -> None:
        if s is True or not s:
            return
        if s is False:
            self.problems.add("no value is allowed here", path, loc)
            return
        if "$ref" in s:
            kind, target = self._resolve(s)
            if kind is not None:
                self.check_named(value, self.named[kind], path, loc, what=kind)
            elif target is not None:
                self._check(value, target, path, loc)
            return
        if "allOf" in s:
            for branch in s["allOf"]:
                self._check(value, branch, path, loc)
        for key in ("anyOf", "oneOf"):
            if key in s:
                if not self._branches(value, s, s[key], path, loc):
                    return
        if not self._type_ok(value, s, path, loc):
            return
        if "enum" in s and value not in s["enum"]:
            hint = None
            if isinstance(value, str):
                sug = did_you_mean(value, [v for v in s["enum"] if isinstance(v, str)])
                hint = f"did you mean '{sug[0]}'?" if sug else None
            self.problems.add(f"expected {describe(s)}, got {show(value)}", path, loc, hint)
            return
        if "const" in s and value != s["const"]:
            self.problems.add(f"expected {show(s['const'])}, got {show(value)}", path, loc)
            return
        if json_type(value) in ("integer", "number"):
            self._number(value, s, path, loc)
        elif isinstance(value, str):
            self._string(value, s, path, loc)
        elif isinstance(value, list):
            self._array(value, s, path, loc)
        elif isinstance(value, dict):
            self._object(value, s, path, loc)

    def _branches(self, value: Any, s: Schema, branches: list[Schema], path: str,
                  loc: Location | None) -> bool:
        """anyOf/oneOf: fine if one branch fits; else report the branch of the right type."""
        trials = []
        for branch in branches:
            scratch = Problems(self.problems.file)
            Validator(scratch, self.named, self.definitions)._check(value, branch, path, loc)
            if not scratch.found:
                return True
            trials.append((branch, scratch))
        typed = [(b, p) for b, p in trials if self._accepts_type(value, b)]
        if not typed:
            rest = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
            what = describe({**rest, "anyOf": branches}) if "type" not in s else describe(s)
            self.problems.add(f"expected {what}, got {show(value)}", path, loc)
            return False
        best = min(typed, key=lambda bp: bp[1].found)[1]
        self.problems.extend(best.items)
        self.problems.found += best.found - len(best.items)
        return False

    def _type_ok(self, value: Any, s: Schema, path: str, loc: Location | None) -> bool:
        t = s.get("type")
        if t is None:
            return True
        types = t if isinstance(t, list) else [t]
        if any(_is_type(value, x) for x in types):
            return True
        hint = None
        if "integer" in types and isinstance(value, float) and value.is_integer():
            hint = "write a whole number (in expressions, use // to divide)"
        self.problems.add(f"expected {describe(s)}, got {show(value)}", path, loc, hint)
        return False

    def _number(self, v: float, s: Schema, path: str, loc: Location | None) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            self.problems.add(f"expected a finite number, got {show(v)}", path, loc,
                              ".inf and .nan are not allowed where a number is expected")
            return
        if isinstance(v, int) and not -MAX_INT <= v <= MAX_INT:
            self.problems.add(f"{show(v)} is too large (numbers in a spec are at most "
                              f"2**63 - 1)", path, loc, f"expected {describe(s)}")
            return
        ok = (("minimum" not in s or v >= s["minimum"])
              and ("exclusiveMinimum" not in s or v > s["exclusiveMinimum"])
              and ("maximum" not in s or v <= s["maximum"])
              and ("exclusiveMaximum" not in s or v < s["exclusiveMaximum"]))
        if not ok:
            self.problems.add(f"expected {describe(s)}, got {show(v)}", path, loc)

    def _string(self, v: str, s: Schema, path: str, loc: Location | None) -> None:
        if "minLength" in s and len(v) < s["minLength"]:
            self.problems.add(f"expected text of at least {s['minLength']} characters, "
                              f"got {show(v)}", path, loc)
        if "maxLength" in s and len(v) > s["maxLength"]:
            self.problems.add(f"expected text of at most {s['maxLength']} characters",
                              path, loc)
        if "pattern" in s and not re.search(s["pattern"], v):
            what = s.get("description") or f"text matching {s['pattern']}"
            self.problems.add(f"expected {what}, got {show(v)}", path, loc)

    def _array(self, v: list, s: Schema, path: str, loc: Location | None) -> None:
        n = len(v)
        if "minItems" in s and n < s["minItems"]:
            self.problems.add(f"expected at least {s['minItems']} item(s), got {n}", path, loc)
        if "maxItems" in s and n > s["maxItems"]:
            self.problems.add(f"expected at most {s['maxItems']} item(s), got {n}", path, loc)
        items = s.get("items")
        for i, item in enumerate(v):
            sub = items[i] if isinstance(items, list) and i < len(items) else (
                items if isinstance(items, dict) else None)
            if sub is not None:
                self._check(item, sub, join_path(path, i), child_loc(v, i) or loc)

    def _object(self, v: dict, s: Schema, path: str, loc: Location | None) -> None:
        props: dict[str, Schema] = s.get("properties", {})
        for key in s.get("required", []):
            if key not in v:
                self.problems.add(f"missing key '{key}'", path, loc)
        extra = s.get("additionalProperties", True)
        names = s.get("propertyNames")
        for key, item in v.items():
            kpath = join_path(path, key)
            kloc = v.key_loc(key) if isinstance(v, LDict) else loc
            vloc = child_loc(v, key) or loc
            if names is not None:
                self._check(key, names, kpath, kloc)
            if key in props:
                self._check(item, props[key], kpath, vloc)
            elif extra is False:
                sug = did_you_mean(str(key), list(props))
                deeper = None if sug else _nested_key(str(key), props)
                hint = (f"did you mean '{sug[0]}'?" if sug else
                        f"'{key}' is set under {join_path(path, deeper)}" if deeper else
                        ("known keys: " + ", ".join(props)) if props else "it takes no keys")
                self.problems.add(f"unknown key '{key}'", kpath, kloc, hint)
            elif isinstance(extra, dict):
                self._check(item, extra, kpath, vloc)
        n = len(v)
        if "minProperties" in s and n < s["minProperties"]:
            self.problems.add(f"expected at least {s['minProperties']} key(s)", path, loc)
        if "maxProperties" in s and n > s["maxProperties"]:
            self.problems.add(f"expected at most {s['maxProperties']} key(s), got "
                              f"{', '.join(map(str, v))}", path, loc)


def _nested_key(key: str, props: dict[str, Schema]) -> str | None:
    """Where ``key`` is a property deeper down (``lr`` -> ``optimizer.adam.lr``), if anywhere.

    A breadth-first search over nested ``properties`` (through anyOf/oneOf), a
    few levels deep: the nearest place wins.
    """
    queue: list[tuple[str, Schema]] = [(k, v) for k, v in props.items()]
    for _ in range(4):
        nxt: list[tuple[str, Schema]] = []
        for prefix, schema in queue:
            if not isinstance(schema, dict):
                continue
            branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
            for b in branches:
                sub = b.get("properties") if isinstance(b, dict) else None
                if not isinstance(sub, dict):
                    continue
                if key in sub:
                    return f"{prefix}.{key}"
                nxt.extend((f"{prefix}.{k}", v) for k, v in sub.items())
        queue = nxt
    return None


def fill_defaults(value: dict, schema: Schema) -> dict:
    """Plain copy of ``value`` with the schema's defaults for missing keys.

    Nested parameter mappings the user gave (``anneal: {steps: 100}``) get their
    own defaults too; absent keys without a default stay absent.
    """
    import copy

    out = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        elif isinstance(out.get(key), dict) and sub.get("type") == "object" and "properties" in sub:
            out[key] = fill_defaults(out[key], sub)
    return out

