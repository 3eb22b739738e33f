"""Variables: resolving ``vars`` and substituting ``${...}`` with lexical scopes.

The document pass substitutes every expression whose variables are all in
``vars``. An expression that reads a *local* variable -- a ``repeat``'s ``as``
index, or a block's parameter inside that block's ``flow`` -- stays as text
until lowering binds it, so the resolved document keeps ``repeat`` and blocks
un-unrolled. Unknown variables are reported where they are written, with the
names in scope as suggestions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from flowspec.errors import Location, Problem, SpecError
from flowspec.spec.expr import IDENT_RE, ExprError, expr_names, substitute_str, unknown_variable
from flowspec.spec.limits import MAX_EXPANDED_VALUES
from flowspec.spec.problems import Problems, join_path
from flowspec.spec.source import LDict, LList, child_loc, located

#: keys of a repeat (or graph) item that see its ``as`` variable.
_SCOPED_KEYS = ("body", "flow", "args")


def _names_in_value(value: Any) -> list[str]:
    """Variable names read anywhere in ``value`` (unparsable expressions read none)."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) and "${" in v:
            try:
                out.extend(expr_names(v))
            except ExprError:
                pass  # reported when the value is substituted
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


def _cycle_from(start: str, deps: dict[str, list[str]], resolved: dict) -> list[str]:
    """A cycle among unresolved variables reachable from ``start``: [a, b, ..., a]."""
    chain, index = [start], {start: 0}
    while True:
        nxt = next(d for d in deps[chain[-1]] if d not in resolved)
        if nxt in index:
            return [*chain[index[nxt]:], nxt]
        index[nxt] = len(chain)
        chain.append(nxt)


class _VarsView(Mapping):
    """The variables as an expression sees them: every declared name, resolved ones readable."""

    def __init__(self, raw: dict, resolved: dict):
        self.raw, self.resolved = raw, resolved

    def __getitem__(self, name: str) -> Any:
        return self.resolved[name]

    def __contains__(self, name: object) -> bool:
        return name in self.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


class Expander:
    """Substitutes ``${...}``; problems go to ``problems``.

    It counts every value it produces (copies of repeated bodies included) and
    stops at :data:`~flowspec.spec.limits.MAX_EXPANDED_VALUES`, so a large
    variable used in a long repeat cannot take unbounded time or memory.
    """

    def __init__(self, problems: Problems):
        self.problems = problems
        self.produced = 0
        #: inside the body of a `repeat` that names no counter (`as:`): an unknown
        #: variable there is most likely the counter the user meant
        self._bare_repeats = 0

    def _count(self, loc: Location | None, n: int = 1) -> None:
        self.produced += n
        if self.produced > MAX_EXPANDED_VALUES:
            raise SpecError(Problem(
                f"substituting variables and unrolling produces more than "
                f"{MAX_EXPANDED_VALUES:,} values", "", loc,
                "large lists in variables are copied at every use; use smaller repeats"))

    # -- vars ----------------------------------------------------------------------------------
    def resolve_vars(self, raw: Any, path: str = "vars", loc: Location | None = None) -> dict:
        """``vars`` -> {name: value}; variables may use earlier or later ones (no cycles).

        Resolved in dependency order (Kahn's algorithm), without recursion, so a long
        chain of variables referring to each other costs one pass.
        """
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.add("expected a mapping of variable names to values", path, loc)
            return {}
        for name in raw:
            if not IDENT_RE.match(str(name)):
                self.problems.add(f"'{name}' is not a valid variable name", join_path(path, name),
                                  raw.key_loc(name) if isinstance(raw, LDict) else loc,
                                  "use letters, digits and _, starting with a letter")
        deps = {name: [n for n in _names_in_value(raw[name]) if n in raw and n != name]
                for name in raw}
        selfref = {name for name in raw if name in _names_in_value(raw[name])}
        users: dict[str, list[str]] = {name: [] for name in raw}
        waiting = {name: len(set(ds)) for name, ds in deps.items()}
        for name, ds in deps.items():
            for d in set(ds):
                users[d].append(name)
        resolved: dict[str, Any] = {}
        broken: set[str] = set()
        env = _VarsView(raw, resolved)
        ready = deque(name for name in raw if not waiting[name])
        todo = list(raw)  # declaration order, to pick the next stuck variable

        def done(name: str) -> None:
            for u in users[name]:
                waiting[u] -= 1
                if not waiting[u]:
                    ready.append(u)

        nxt = 0
        while len(resolved) < len(raw):
            if not ready:  # every variable left waits on a cycle
                while todo[nxt] in resolved:
                    nxt += 1
                cycle = _cycle_from(todo[nxt], deps, resolved)
                closer = cycle[-2]
                self.problems.add("variables refer to each other in a cycle: "
                                  + " -> ".join(cycle), join_path(path, closer),
                                  child_loc(raw, closer) or loc)
                for name in dict.fromkeys(cycle):
                    self.problems.poison(child_loc(raw, name) or loc)
                    resolved[name] = raw[name]
                    broken.add(name)
                    done(name)
                continue
            name = ready.popleft()
            if name in resolved:
                continue
            vloc = child_loc(raw, name) or loc
            if name in selfref:
                self.problems.add(f"variables refer to each other in a cycle: {name} -> {name}",
                                  join_path(path, name), vloc)
                self.problems.poison(vloc)
                resolved[name], bad = raw[name], True
            elif any(d in broken for d in deps[name]):
                resolved[name], bad = raw[name], True  # already reported where it broke
            else:
                before = self.problems.found
                resolved[name] = self.substitute(raw[name], env, join_path(path, name), vloc)
                bad = self.problems.found != before
            if bad:
                broken.add(name)
            done(name)
        return {name: resolved[name] for name in raw}

    # -- substitution --------------------------------------------------------------------------
    def substitute(self, value: Any, env: Mapping[str, Any], path: str, loc: Location | None,
                   local: frozenset[str] = frozenset(), scoped: bool = False) -> Any:
        """Copy of ``value`` with expressions over ``env`` replaced.

        Expressions reading a name in ``local`` are kept as text. With ``scoped``,
        a mapping's ``as`` variable is local inside its ``body``/``flow``/``args``.
        """
        self._count(loc)
        if isinstance(value, str):
            return self._string(value, env, path, loc, local)
        if isinstance(value, dict):
            out = LDict.at(getattr(value, "loc", None) or loc)
            inner = local
            if scoped and isinstance(value.get("as"), str) and "repeat" in value:
                inner = local | {value["as"]}
            bare = scoped and "repeat" in value and "as" not in value
            for key, item in value.items():
                kloc = value.key_loc(key) if isinstance(value, LDict) else loc
                vloc = child_loc(value, key) or loc
                sub_local = inner if key in _SCOPED_KEYS else local
                counted = bare and key in _SCOPED_KEYS
                self._bare_repeats += counted
                try:
                    out.put(key, self.substitute(item, env, join_path(path, key), vloc,
                                                 sub_local, scoped), vloc, kloc)
                finally:
                    self._bare_repeats -= counted
            return out
        if isinstance(value, list):
            items = LList.at(getattr(value, "loc", None) or loc)
            for i, item in enumerate(value):
                iloc = child_loc(value, i) or loc
                if isinstance(item, (str, dict, list)):
                    item = self.substitute(item, env, join_path(path, i), iloc, local, scoped)
                else:  # a number, bool or null: nothing to substitute (a long list is cheap)
                    self._count(iloc)
                items.push(item, iloc)
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
            hint = err.hint
            if self._bare_repeats:
                hint = (f"the enclosing `repeat` names no counter: add `as: {name}` next to "
                        f"`repeat:` to count its copies 0, 1, ... as ${{{name}}}"
                        + (f" (or {hint})" if hint and hint.startswith("did you") else ""))
            self.problems.add(err.message, path, loc, hint)
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
        if isinstance(result, (dict, list)):  # a variable's list or mapping: a located copy
            self._count(loc, _size(result))
            return located(result, loc)
        return result


def _size(value: Any) -> int:
    """Number of values in ``value`` (containers and scalars), without recursion."""
    n, stack = 0, [value]
    while stack:
        v = stack.pop()
        n += 1
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n
