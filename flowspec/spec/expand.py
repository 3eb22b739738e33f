"""Variables: resolving ``vars`` and substituting ``${...}`` with lexical scopes.

The document pass substitutes every expression whose variables are all in
``vars``. An expression that reads a *local* variable -- a ``repeat``'s ``as``
index, or a block's parameter inside that block's ``flow`` -- stays as text
until lowering binds it, so the resolved document keeps ``repeat`` and blocks
un-unrolled. Unknown variables are reported where they are written, with the
names in scope as suggestions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from flowspec.errors import Location
from flowspec.spec.expr import IDENT_RE, ExprError, expr_names, substitute_str, unknown_variable
from flowspec.spec.problems import Problems, join_path
from flowspec.spec.source import LDict, LList, child_loc, located

#: keys of a repeat (or graph) item that see its ``as`` variable.
_SCOPED_KEYS = ("body", "flow", "args")


class Expander:
    """Substitutes ``${...}``; problems go to ``problems``."""

    def __init__(self, problems: Problems):
        self.problems = problems

    # -- vars ----------------------------------------------------------------------------------
    def resolve_vars(self, raw: Any, path: str = "vars", loc: Location | None = None) -> dict:
        """``vars`` -> {name: value}; variables may use earlier or later ones (no cycles)."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.add("expected a mapping of variable names to values", path, loc)
            return {}
        resolved: dict[str, Any] = {}
        stack: list[str] = []
        for name in raw:
            if not IDENT_RE.match(str(name)):
                self.problems.add(f"'{name}' is not a valid variable name", join_path(path, name),
                                  raw.key_loc(name) if isinstance(raw, LDict) else loc,
                                  "use letters, digits and _, starting with a letter")

        def get(name: str) -> Any:
            if name in resolved:
                return resolved[name]
            if name in stack:
                chain = " -> ".join([*stack[stack.index(name):], name])
                raise ExprError(f"variables refer to each other in a cycle: {chain}")
            stack.append(name)
            try:
                value = self.substitute(raw[name], lazy, join_path(path, name),
                                        child_loc(raw, name) or loc)
            finally:
                stack.pop()
            resolved[name] = value
            return value

        class _Lazy(Mapping):
            def __getitem__(self, name: str) -> Any:
                return get(name)

            def __contains__(self, name: object) -> bool:
                return name in raw

            def __iter__(self) -> Iterator[str]:
                return iter(raw)

            def __len__(self) -> int:
                return len(raw)

        lazy = _Lazy()
        for name in raw:
            try:
                get(name)
            except ExprError as err:  # a cycle reaching back to the top
                self.problems.add(err.message, join_path(path, name),
                                  child_loc(raw, name) or loc, err.hint)
                resolved[name] = None
        return resolved

    # -- substitution --------------------------------------------------------------------------
    def substitute(self, value: Any, env: Mapping[str, Any], path: str, loc: Location | None,
                   local: frozenset[str] = frozenset(), scoped: bool = False) -> Any:
        """Copy of ``value`` with expressions over ``env`` replaced.

        Expressions reading a name in ``local`` are kept as text. With ``scoped``,
        a mapping's ``as`` variable is local inside its ``body``/``flow``/``args``.
        """
        if isinstance(value, str):
            return self._string(value, env, path, loc, local)
        if isinstance(value, dict):
            out = LDict.at(getattr(value, "loc", None) or loc)
            inner = local
            if scoped and isinstance(value.get("as"), str) and "repeat" in value:
                inner = local | {value["as"]}
            for key, item in value.items():
                kloc = value.key_loc(key) if isinstance(value, LDict) else loc
                vloc = child_loc(value, key) or loc
                sub_local = inner if key in _SCOPED_KEYS else local
                out.put(key, self.substitute(item, env, join_path(path, key), vloc, sub_local,
                                             scoped), vloc, kloc)
            return out
        if isinstance(value, list):
            items = LList.at(getattr(value, "loc", None) or loc)
            for i, item in enumerate(value):
                iloc = child_loc(value, i) or loc
                items.push(self.substitute(item, env, join_path(path, i), iloc, local, scoped),
                           iloc)
            return items
        return value

    def _string(self, text: str, env: Mapping[str, Any], path: str, loc: Location | None,
                local: frozenset[str]) -> Any:
        if "${" not in text:
            return text
        try:
            names = expr_names(text)
        except ExprError as err:
            self.problems.add(err.message, path, loc, err.hint)
            self.problems.poison(loc)
            return text
        known = [*env, *local]
        missing = [n for n in names if n not in env and n not in local]
        for name in missing:
            err = unknown_variable(name, known)
            self.problems.add(err.message, path, loc, err.hint)
        if missing:
            self.problems.poison(loc)
            return text
        if any(n in local for n in names):
            return text
        try:
            result = substitute_str(text, env)
        except ExprError as err:
            self.problems.add(err.message, path, loc, err.hint)
            self.problems.poison(loc)
            return text
        if isinstance(result, (dict, list)):
            return located(copy.deepcopy(result), loc)
        return result
