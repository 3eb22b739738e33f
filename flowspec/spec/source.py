"""Safe YAML with source positions: every key, value and list item knows its file:line:col.

Specs are data, so loading never runs a tag. Scalars follow YAML 1.2's core
schema rather than PyYAML's YAML 1.1 one: ``1e-3`` and ``5e+2`` are numbers,
``on``/``yes`` are strings, ``010`` is ten, and ``1:30`` is text. Duplicate keys
are errors (YAML silently keeps one of them otherwise).

Mappings and lists are loaded as :class:`LDict` and :class:`LList`, plain
``dict``/``list`` subclasses that carry the positions of their keys, values
and items; scalars get their position from the container holding them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flowspec.errors import Location, Problem, SpecError
from flowspec.spec.limits import (
    MAX_INT_DIGITS,
    MAX_NESTING,
    MAX_SPEC_BYTES,
    MAX_YAML_VALUES,
    digits_ok,
)

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, SEQ, MAP, MERGE = (
    _T + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)


class LDict(dict):
    """A mapping that remembers where it, each key and each value were written."""

    loc: Location | None
    key_locs: dict[Any, Location | None]
    val_locs: dict[Any, Location | None]

    @classmethod
    def at(cls, loc: Location | None) -> LDict:
        d = cls()
        d.loc, d.key_locs, d.val_locs = loc, {}, {}
        return d

    def put(self, key: Any, value: Any, val_loc: Location | None = None,
            key_loc: Location | None = None) -> None:
        """Set ``key`` with the positions of the key and the value."""
        self[key] = value
        self.key_locs[key] = key_loc or val_loc or self.loc
        self.val_locs[key] = val_loc or self.loc

    def value_loc(self, key: Any) -> Location | None:
        return getattr(self, "val_locs", {}).get(key) or getattr(self, "loc", None)

    def key_loc(self, key: Any) -> Location | None:
        return getattr(self, "key_locs", {}).get(key) or getattr(self, "loc", None)


class LList(list):
    """A list that remembers where it and each item were written."""

    loc: Location | None
    item_locs: list[Location | None]

    @classmethod
    def at(cls, loc: Location | None) -> LList:
        items = cls()
        items.loc, items.item_locs = loc, []
        return items

    def push(self, value: Any, loc: Location | None = None) -> None:
        self.append(value)
        self.item_locs.append(loc or self.loc)

    def value_loc(self, index: int) -> Location | None:
        locs = getattr(self, "item_locs", [])
        return (locs[index] if 0 <= index < len(locs) else None) or getattr(self, "loc", None)


def loc_of(value: Any, default: Location | None = None) -> Location | None:
    """The position of a container, or ``default`` for scalars."""
    return getattr(value, "loc", None) or default


def child_loc(container: Any, key: Any) -> Location | None:
    """Where ``container[key]`` was written (the container's position if unknown)."""
    if isinstance(container, (LDict, LList)):
        return container.value_loc(key)
    return None


def located(value: Any, loc: Location | None) -> Any:
    """Wrap plain data (a dict source, an override value) so every part sits at ``loc``."""
    if isinstance(value, dict):
        out = LDict.at(getattr(value, "loc", None) or loc)
        for k, v in value.items():
            out.put(k, located(v, child_loc(value, k) or loc),
                    child_loc(value, k) or loc,
                    value.key_loc(k) if isinstance(value, LDict) else loc)
        return out
    if isinstance(value, (list, tuple)):
        items = LList.at(getattr(value, "loc", None) or loc)
        for i, v in enumerate(value):
            items.push(located(v, child_loc(value, i) or loc), child_loc(value, i) or loc)
        return items
    return value


def check_data(value: Any, where: Location | None = None) -> None:
    """Plain data (a dict spec, an override value) within the limits YAML text is held to.

    Nesting depth, number of values and integer sizes, walked without recursion;
    raises :class:`SpecError`. Then :func:`located` and :func:`plain` (recursive) are safe.
    """
    count = 0
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise SpecError(Problem(f"the spec has more than {MAX_YAML_VALUES:,} values", "",
                                    where))
        if depth > MAX_NESTING:
            raise SpecError(Problem(f"values are nested more than {MAX_NESTING} levels deep",
                                    "", where, "flatten the structure"))
        if isinstance(v, int) and not isinstance(v, bool) and not digits_ok(v):
            raise SpecError(Problem(f"an integer of more than {MAX_INT_DIGITS} digits is too "
                                    "large", "", where))
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1) for x in v)


def plain(value: Any) -> Any:
    """Located containers (and tuples) -> plain ``dict``/``list``: JSON and YAML safe."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return copy.deepcopy(value)


# -- resolver: YAML 1.2 core scalars ----------------------------------------------------------
_INT_RE = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
         |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
         |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
         |[-+]?\.(?:inf|Inf|INF)
         |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")


class _Resolver(yaml.resolver.BaseResolver):
    yaml_implicit_resolvers: dict = {}


_Resolver.add_implicit_resolver(BOOL, _BOOL_RE, list("tTfF"))
_Resolver.add_implicit_resolver(FLOAT, _FLOAT_RE, list("-+0123456789."))
_Resolver.add_implicit_resolver(INT, _INT_RE, list("-+0123456789"))
_Resolver.add_implicit_resolver(NULL, _NULL_RE, ["~", "n", "N", ""])
_Resolver.add_implicit_resolver(MERGE, re.compile(r"^(?:<<)$"), ["<"])


class _TooDeep(Exception):
    """Raised by the composer past :data:`MAX_NESTING` levels (before Python's stack runs out)."""

    def __init__(self, mark: Any):
        self.mark = mark


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
              yaml.composer.Composer, _Resolver):
    """Parses and composes nodes only: nothing is ever constructed from a tag."""

    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # PyYAML's composer recurses
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _int(text: str) -> int:
    t = text.replace("_", "")
    if len(t.lstrip("+-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of more than {MAX_INT_DIGITS} digits is too large")
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if t.startswith("0x"):
        return sign * int(t[2:], 16)
    if t.startswith("0o"):
        return sign * int(t[2:], 8)
    return sign * int(t, 10)


def _float(text: str) -> float:
    t = text.replace("_", "").lower()
    if t.endswith(".inf"):
        return float("-inf") if t.startswith("-") else float("inf")
    if t == ".nan":
        return float("nan")
    return float(t)


class _Builder:
    """Composed nodes -> located Python data, collecting problems instead of stopping."""

    def __init__(self, file: str | None, problems: list[Problem]):
        self.file = file
        self.problems = problems
        self._active: set[int] = set()

    def loc(self, node: Node) -> Location:
        m = node.start_mark
        return Location(self.file, m.line + 1, m.column + 1)

    def bad(self, message: str, node: Node, hint: str | None = None) -> None:
        self.problems.append(Problem(message, "", self.loc(node), hint))

    def build(self, node: Node) -> Any:
        if id(node) in self._active:
            self.bad("an alias refers to itself (recursive YAML structure)", node)
            return None
        if len(self._active) >= MAX_NESTING:  # an alias inside an alias inside ...
            raise SpecError(Problem(
                f"values are nested more than {MAX_NESTING} levels deep (through aliases)", "",
                self.loc(node), "flatten the structure"))
        self._active.add(id(node))
        try:
            if isinstance(node, ScalarNode):
                return self._scalar(node)
            if isinstance(node, SequenceNode):
                return self._sequence(node)
            return self._mapping(node)
        finally:
            self._active.discard(id(node))

    def _tag_error(self, node: Node) -> None:
        self.bad(f"YAML tag '{_short_tag(node.tag)}' is not allowed", node,
                 "specs are plain data: tags never run code; remove the tag")

    def _scalar(self, node: ScalarNode) -> Any:
        tag, text = node.tag, node.value
        try:
            if tag == STR:
                return text
            if tag == INT:
                return _int(text)
            if tag == FLOAT:
                return _float(text)
            if tag == BOOL:
                return text.lower() == "true"
            if tag == NULL:
                return None
        except ValueError as err:
            why = str(err) if "too large" in str(err) else None
            self.bad(f"'{_short(text)}' is not a valid {_short_tag(tag)}", node, why)
            return None
        self._tag_error(node)
        return None

    def _sequence(self, node: SequenceNode) -> LList | None:
        if node.tag != SEQ:
            self._tag_error(node)
            return None
        out = LList.at(self.loc(node))
        for item in node.value:
            out.push(self.build(item), self.loc(item))
        return out

    def _mapping(self, node: MappingNode) -> LDict | None:
        if node.tag != MAP:
            self._tag_error(node)
            return None
        out = LDict.at(self.loc(node))
        merged: list[LDict] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                merged.extend(self._merge_sources(value_node))
                continue
            key = self.build(key_node)
            if not isinstance(key, str):
                self.bad(f"keys must be names (text), got {_short(repr(key))}", key_node,
                         "quote the key if it is meant as text")
                continue
            if key in out:
                first = out.key_locs[key]
                self.bad(f"duplicate key '{key}'", key_node,
                         f"first written at {first}" if first else None)
                continue
            out.put(key, self.build(value_node), self.loc(value_node), self.loc(key_node))
        for source in merged:
            for key, value in source.items():
                if key not in out:
                    out.put(key, value, source.value_loc(key), source.key_loc(key))
        return out

    def _merge_sources(self, node: Node) -> list[LDict]:
        value = self.build(node)
        sources = value if isinstance(value, list) else [value]
        good = [s for s in sources if isinstance(s, LDict)]
        if len(good) != len(sources):
            self.bad("'<<' merges mappings only", node)
        return good


_FAILED = object()
_Fast: Any = None
try:  # libyaml composes several times faster; PyYAML's wheels ship it
    from yaml._yaml import CParser

    class _Fast(CParser, _Resolver):  # type: ignore[no-redef]
        """libyaml's composer with this module's resolver: nodes only, as :class:`_Loader`."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            _Resolver.__init__(self)
except ImportError:  # pragma: no cover - a PyYAML built without libyaml
    pass


def _compose_fast(text: str) -> Any:
    """Compose with libyaml; ``_FAILED`` on any error (or without libyaml).

    Errors are then reported by PyYAML's own parser (:func:`_compose`), whose
    messages and positions the tests pin down.
    """
    if _Fast is None:
        return _FAILED
    try:
        return _Fast(text).get_single_node()
    except (yaml.YAMLError, RecursionError, MemoryError):
        return _FAILED


def _compose(text: str, file: str | None) -> Any:
    """Compose with PyYAML's own parser; every failure becomes a located :class:`SpecError`."""
    loader = None
    try:
        loader = _Loader(text)
        return loader.get_single_node()
    except yaml.reader.ReaderError as err:  # a character YAML does not allow
        raise SpecError(_bad_character(err, text, file)) from None
    except _TooDeep as deep:
        mark = deep.mark
        raise SpecError(Problem(f"values are nested more than {MAX_NESTING} levels deep", "",
                                Location(file, mark.line + 1, mark.column + 1),
                                "flatten the structure")) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        what = err.problem or err.context or "syntax error"
        hint = None
        if err.context and err.context_mark and err.problem_mark:
            cm = err.context_mark
            hint = f"{err.context} at {Location(file, cm.line + 1, cm.column + 1)}"
        raise SpecError(Problem(f"invalid YAML: {what}", "", loc, hint)) from None
    except yaml.YAMLError as err:
        raise SpecError(Problem(f"invalid YAML: {err}", "", Location(file))) from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, list[Problem]]:
    """YAML text -> (located data, problems found while building it).

    Syntax errors cannot be recovered from and raise :class:`SpecError` at once,
    located at the parser's mark. Other problems (duplicate keys, tags) are
    returned so the caller can report them together with everything else; a
    value with a forbidden tag is loaded as null.
    """
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(Problem(f"the YAML text is larger than {MAX_SPEC_BYTES:,} bytes", "",
                                Location(file), "see 'Limits' in docs/spec-language.md"))
    node = _compose_fast(text)
    if node is _FAILED:  # the pure-Python composer says what is wrong, and where
        node = _compose(text, file)
    if node is None:
        return None, []
    _check_expanded_size(node, file)
    problems: list[Problem] = []
    return _Builder(file, problems).build(node), problems


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded_size(root: Node, file: str | None) -> None:
    """Refuse a document whose aliases expand it past :data:`MAX_YAML_VALUES` values.

    Composed YAML shares an aliased node; building copies it at every use, so nine
    aliases of nine aliases ... ("billion laughs") build billions of values from a
    few lines. Sizes are computed on the shared nodes first, in linear time.
    """
    if isinstance(root, ScalarNode):
        return
    size: dict[int, int] = {}
    uses: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            size[key] = 1 + sum(1 if isinstance(c, ScalarNode) else size.get(id(c), 1)
                                for c in _children(node))
            continue
        uses[key] = uses.get(key, 0) + 1
        if key in size or key in open_:  # shared (or recursive: reported when built)
            continue
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if not isinstance(c, ScalarNode))
    total = size[id(root)]
    if total <= MAX_YAML_VALUES:
        return
    shared = [n for n in _all_nodes(root) if uses.get(id(n), 0) > 1 and _children(n)]
    where = max(shared, key=lambda n: size[id(n)] * uses[id(n)], default=root)
    m = where.start_mark
    raise SpecError(Problem(
        f"aliases expand the YAML to {total:,} values (at most {MAX_YAML_VALUES:,})", "",
        Location(file, m.line + 1, m.column + 1),
        "each alias (*name) copies the anchored value (&name) written here; "
        "aliases of aliases multiply"))


def _all_nodes(root: Node) -> list[Node]:
    seen: set[int] = set()
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(_children(node))
    return out


def _bad_character(err: yaml.reader.ReaderError, text: str, file: str | None) -> Problem:
    """A control character (or other non-printable) at its line and column."""
    pos = err.position if isinstance(err.position, int) else 0
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = err.character
    point = ord(char) if isinstance(char, str) else int(char)
    escape = f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"
    return Problem(f"invalid YAML: the control character U+{point:04X} is not allowed", "",
                   Location(file, line, col),
                   f'remove it; inside a double-quoted string write it as "{escape}"')


# -- dumping: text that reads back identically ------------------------------------------------
class _DumpResolver(_Resolver):
    """Quote any string that this loader *or* a YAML 1.1 reader would take for a non-string."""

    def resolve(self, kind, value, implicit):  # type: ignore[override]
        tag = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and tag == STR:
            for other, regexp in yaml.resolver.Resolver.yaml_implicit_resolvers.get(
                    value[:1], []):
                if regexp.match(value) and other != STR:
                    return other
        return tag


class _Dumper(yaml.emitter.Emitter, yaml.serializer.Serializer,
              yaml.representer.SafeRepresenter, _DumpResolver):
    def __init__(self, stream: Any, **kw: Any):
        yaml.emitter.Emitter.__init__(self, stream, width=kw.get("width", 100),
                                      allow_unicode=True)
        yaml.serializer.Serializer.__init__(self)
        yaml.representer.SafeRepresenter.__init__(
            self, default_flow_style=kw.get("default_flow_style"), sort_keys=False)
        _DumpResolver.__init__(self)


def dump_yaml(data: Any) -> str:
    """Plain data -> YAML text that :func:`parse_yaml` reads back to the same data."""
    return yaml.dump(plain(data), Dumper=_Dumper, default_flow_style=None)
