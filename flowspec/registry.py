"""Registries: the one place each kind of named thing is declared.

A registry maps a name (as written in a spec) to the class or function that
implements it, together with the JSON-Schema fragment of its parameters, a
one-line doc and small examples. The spec schema, the ``flowspec nodes``
catalogue, the docs and the contract tests are all generated from registries,
so adding a node is one class plus one ``@NODES.register(...)``.

In a spec every registered thing is written either as its bare name
(``standard_normal``) or as a one-key mapping ``{name: {param: value}}``.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from flowspec.errors import UnknownNameError

Schema = dict[str, Any]


def params_schema(required: tuple[str, ...] | list[str] = (), **properties: Schema) -> Schema:
    """A closed JSON-Schema object for a parameter set (unknown keys are errors)."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def ref(definition: str) -> Schema:
    """A reference to a shared definition of the spec schema (``net``, ``prior`` ...)."""
    return {"$ref": f"#/definitions/{definition}"}


def did_you_mean(name: str, known: list[str], n: int = 1) -> list[str]:
    return difflib.get_close_matches(name, known, n=n, cutoff=0.6)


def split_named(value: Any) -> tuple[str, dict[str, Any]]:
    """``'name'`` or ``{'name': {params}}`` -> ``(name, params)``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and len(value) == 1:
        (name, params), = value.items()
        return str(name), dict(params or {})
    raise ValueError(f"expected a name or a one-key mapping {{name: {{...}}}}, got {value!r}")


@dataclass
class Entry:
    """One registered thing."""

    name: str
    obj: Any
    schema: Schema
    doc: str
    category: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        props = self.schema.get("properties", {})
        return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}

    def with_defaults(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Parameters with every documented default filled in (top level only)."""
        out = self.defaults()
        out.update(params or {})
        return out


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


class Registry:
    """Name -> :class:`Entry`, with 'did you mean' on misses."""

    def __init__(self, kind: str, plugin_group: str | None = None, title: str = ""):
        self.kind = kind
        #: the section title in the catalogue (``flowspec nodes``, docs)
        self.title = title or kind
        self.plugin_group = plugin_group
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = plugin_group is None

    def register(
        self,
        name: str,
        *,
        schema: Schema | None = None,
        category: str = "",
        examples: list[dict[str, Any]] | tuple = (),
        doc: str | None = None,
        **extra: Any,
    ) -> Callable[[Any], Any]:
        """Decorator: ``@REG.register("name", schema=params_schema(...), examples=[...])``."""

        def deco(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(
                name=name,
                obj=obj,
                schema=schema if schema is not None else params_schema(),
                doc=doc if doc is not None else _first_paragraph(obj),
                category=category,
                examples=list(examples),
                extra=extra,
            )
            obj.registered_name = name
            return obj

        return deco

    def _load_plugins(self) -> None:
        """Third-party packages add entries through an entry-point group (never YAML)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.plugin_group):
            ep.load()

    def get(self, name: str) -> Entry:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise UnknownNameError(self.kind, name, did_you_mean(name, known), known) from None

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._load_plugins()
        return iter(sorted(self._entries.values(), key=lambda e: (e.category, e.name)))

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def build(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        """Construct from a spec value (``name`` or ``{name: params}``), defaults filled.

        ``args``/``kwargs`` are the structural arguments the kind defines (shapes,
        context shape); the parameters come from ``value``.
        """
        name, params = split_named(value)
        entry = self.get(name)
        return entry.obj(*args, **kwargs, **entry.with_defaults(params))
