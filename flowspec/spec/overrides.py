"""``--set`` overrides and a spec's ``quick`` mapping: dotted paths into the document.

``train.optimizer.adam.lr=3e-4`` sets one value; list indices are numbers
(``model.flow.1.repeat=2`` or ``model.flow[1].repeat=2``). The value is parsed
with the spec's own YAML rules, so ``3e-4`` is a number and ``[64, 64]`` a list.
A path into a missing section creates it; a bare name on the way
(``optimizer: adam``) becomes ``{adam: {...}}``. Overrides are applied before
variables are substituted, so ``vars.K=4`` changes every ``${K}``.
"""

from __future__ import annotations

import re
from typing import Any

from flowspec.errors import Location
from flowspec.registry import did_you_mean
from flowspec.spec.expr import variable_hint
from flowspec.spec.problems import Problems, join_path
from flowspec.spec.schema import TOP_KEYS
from flowspec.spec.source import (
    LDict,
    LList,
    check_data,
    child_loc,
    located,
    parse_yaml,
    plain,
)
from flowspec.spec.validate import show

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class Override:
    """One ``path = value``, with where it came from (for messages)."""

    def __init__(self, path: str, value: Any, loc: Location | None,
                 path_loc: Location | None = None):
        self.path, self.value, self.loc = path, value, loc
        #: where the path is written (a quick: key), for problems with the path itself
        self.path_loc = path_loc or loc


def split_path(path: str) -> list[str | int]:
    """``model.flow[1].repeat`` / ``model.flow.1.repeat`` -> ['model', 'flow', 1, 'repeat']."""
    out: list[str | int] = []
    for part in path.split("."):
        if not part:
            raise ValueError(f"empty segment in '{path}'")
        matched = 0
        for m in _SEGMENT.finditer(part):
            if m.start() != matched:
                raise ValueError(f"cannot read '{part}' in '{path}'")
            name, index = m.groups()
            out.append(int(index) if index is not None else (int(name) if name.isdigit()
                                                              else name))
            matched = m.end()
        if matched != len(part):
            raise ValueError(f"cannot read '{part}' in '{path}'")
    return out


def parse_overrides(overrides: list[str] | dict | None, problems: Problems) -> list[Override]:
    """``["a.b=1", ...]`` (values parsed as YAML) or ``{"a.b": 1}`` (values as given)."""
    if not overrides:
        return []
    out = []
    if isinstance(overrides, dict):
        for path, value in overrides.items():
            loc = Location(f"override {path}")
            check_data(value, loc)
            out.append(Override(str(path), located(plain(value), loc), loc))
        return out
    for text in overrides:
        loc = Location(f"--set {text}")
        if "=" not in text:
            problems.add(f"expected PATH=VALUE, got '{text}'", "", loc,
                         "e.g. --set train.steps=100")
            continue
        path, _, raw = text.partition("=")
        try:
            value, errs = parse_yaml(raw, loc.file)
        except Exception as err:  # a SpecError with the YAML problem
            problems.add(f"cannot read the value: {err}", path.strip(), loc)
            continue
        for e in errs:
            problems.add(e.message, path.strip(), loc, e.hint)
        out.append(Override(path.strip(), located(plain(value), loc), loc))
    return out


def apply_override(doc: LDict, ov: Override, problems: Problems) -> None:
    """Set ``ov.path`` in ``doc`` (in place), creating missing sections."""
    try:
        segs = split_path(ov.path)
    except ValueError as err:
        problems.add(f"bad override path: {err}", ov.path, ov.path_loc)
        return
    top = segs[0]
    if top not in TOP_KEYS:
        sug = did_you_mean(str(top), list(TOP_KEYS))
        problems.add(f"unknown section '{top}'", ov.path, ov.path_loc,
                     f"did you mean '{sug[0]}'?" if sug else "sections: " + ", ".join(TOP_KEYS))
        return
    if top == "vars" and len(segs) > 1 and not declared_var(doc, segs[1], ov.path, ov.path_loc,
                                                            problems):
        return
    cur: Any = doc
    here = ""
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        nxt = None if last else segs[i + 1]
        if isinstance(cur, dict):
            seg = str(seg)
            if last:
                existed = seg in cur
                cur.put(seg, ov.value, ov.loc, cur.key_loc(seg) if existed else ov.loc)
                return
            if cur.get(seg) is None:
                if isinstance(nxt, int):
                    problems.add(f"cannot index '{join_path(here, seg)}': it does not exist",
                                 ov.path, ov.path_loc)
                    return
                cur.put(seg, LDict.at(ov.loc), ov.loc, cur.key_loc(seg) if seg in cur
                        else ov.loc)
        elif isinstance(cur, list):
            if not isinstance(seg, int) or not 0 <= seg < len(cur):
                what = (f"index {seg} is out of range (0..{len(cur) - 1})"
                        if isinstance(seg, int) else f"'{seg}' is not a list index")
                problems.add(f"cannot set '{ov.path}': '{here}' is a list; {what}", ov.path,
                             ov.path_loc)
                return
            if last:
                cur[seg] = ov.value
                if isinstance(cur, LList):
                    cur.item_locs[seg] = ov.loc
                return
            if cur[seg] is None:
                cur[seg] = LDict.at(ov.loc)
        child = cur[seg]
        if isinstance(child, str) and child == nxt:  # `optimizer: adam` -> {adam: ...}
            loc = child_loc(cur, seg) or ov.loc
            named = LDict.at(loc)
            named.put(nxt, None, loc)
            if isinstance(cur, LDict):
                cur.put(seg, named, loc, cur.key_loc(seg))
            else:
                cur[seg] = named
            child = named
        here = join_path(here, seg)
        if not isinstance(child, (dict, list)):
            problems.add(f"cannot set '{ov.path}': '{here}' is {show(child)}, not a mapping "
                         "or a list", ov.path, ov.path_loc)
            return
        cur = child


def declared_var(doc: LDict, name: str | int, path: str, loc: Location | None,
                 problems: Problems) -> bool:
    """An override may change a variable, never add one: a typo would be silently unused."""
    declared = doc.get("vars")
    names = [str(k) for k in declared] if isinstance(declared, dict) else []
    if str(name) in names:
        return True
    hint = variable_hint(str(name), names, prefix="vars.", listing="the spec declares: ",
                         none="the spec declares no vars: add it under vars: first")
    problems.add(f"unknown variable '{name}': overrides change declared variables only",
                 path, loc, hint)
    return False
