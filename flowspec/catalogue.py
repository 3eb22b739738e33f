"""The catalogue of registered things, generated from the registries (for docs and the CLI).

Every registry a spec can name from is listed: bijector nodes, conditioner nets,
priors, datasets, preprocessing steps, energies and training objectives.
Docstrings are written in RST style (````code````); :func:`doc_markdown` and
:func:`doc_text` render them for Markdown and for the terminal (where rich markup
must not eat ``[prod(shape)]``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from flowspec.registry import Entry, Registry

if TYPE_CHECKING:
    from rich.text import Text


def registries() -> list[tuple[Registry, str]]:
    """(registry, section title) for every kind of name a spec can use, in spec order
    (:func:`flowspec.spec.schema.registries` is the one list)."""
    from flowspec.spec.schema import registries as spec_registries

    return [(reg, reg.title) for reg in spec_registries().values()]


def public(reg: Registry) -> list[Entry]:
    """The entries users see (names starting with ``_`` are test-only registrations)."""
    return [e for e in reg if not e.name.startswith("_")]


def find(name: str) -> list[tuple[Registry, Entry]]:
    """Every registered thing called ``name`` (a name may be, say, a node and a prep step);
    empty when there is none (:func:`known_names` for a 'did you mean')."""
    return [(reg, reg.get(name)) for reg, _ in registries() if name in reg]


def known_names() -> list[str]:
    """Every public name of every registry, sorted."""
    return sorted({e.name for reg, _ in registries() for e in public(reg)})


_CODE = re.compile(r"``(.+?)``")


def doc_markdown(doc: str) -> str:
    """RST ````code```` -> Markdown `code` (single backticks read better in every viewer)."""
    return _CODE.sub(lambda m: f"`{m.group(1)}`", doc or "")


def doc_text(doc: str, code_style: str = "cyan") -> Text:
    """A docstring for the terminal: code spans styled, no backticks, and no rich markup
    interpreted (a plain :class:`rich.text.Text`, so ``[prod(shape)]`` stays visible)."""
    from rich.text import Text

    text = Text()
    for i, part in enumerate(_CODE.split(doc or "")):
        text.append(part, style=code_style if i % 2 else "")
    return text


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    t = schema.get("type", "any")
    if isinstance(t, list):
        return " \\| ".join(t)
    if t == "array" and isinstance(schema.get("items"), dict):
        return f"list[{_type_of(schema['items'])}]"
    if "oneOf" in schema or "anyOf" in schema:
        return " \\| ".join(_type_of(s) for s in schema.get("oneOf", schema.get("anyOf")))
    return str(t)


def param_rows(entry: Entry) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) per parameter."""
    props = entry.schema.get("properties", {})
    required = set(entry.schema.get("required", []))
    rows = []
    for name, sch in props.items():
        default = "required" if name in required else (
            json.dumps(sch["default"]) if "default" in sch else "—")
        rows.append((name, _type_of(sch), default, sch.get("description", "")))
    return rows


def inverse_kind(entry: Entry) -> str:
    cls = entry.obj
    stated = getattr(cls, "inverse_doc", None)  # nodes whose tolerance follows their params
    if stated:
        return stated
    analytic = getattr(cls, "analytic", "both")
    if analytic == "both":
        return "analytic"
    solved = "forward" if analytic == "inverse" else "inverse"
    return f"{solved} numerical (tol {getattr(cls, 'tolerance', 0):g})"


def registry_markdown(reg: Registry, title: str) -> str:
    lines = [f"### {title}", ""]
    for entry in public(reg):
        head = f"#### `{entry.name}`"
        if entry.category:
            head += f" · {entry.category}"
        lines += [head, "", doc_markdown(entry.doc), ""]
        if reg.kind == "node":
            lines += [f"Inverse: {inverse_kind(entry)}.", ""]
        rows = param_rows(entry)
        if rows:
            lines += ["| parameter | type | default | description |", "| --- | --- | --- | --- |"]
            lines += [f"| `{n}` | {t} | {d} | {doc_markdown(desc)} |" for n, t, d, desc in rows]
            lines.append("")
    return "\n".join(lines)


def catalogue_markdown() -> str:
    """The catalogue of every registry in Markdown (README, ``flowspec nodes --markdown``)."""
    return "\n".join(registry_markdown(reg, title) for reg, title in registries())


START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def update_readme(path: str = "README.md") -> bool:
    """Rewrite the generated catalogue section of the README; True if it changed."""
    from pathlib import Path

    p = Path(path)
    text = p.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{catalogue_markdown()}\n{END}{tail}"
    p.write_text(new)
    return new != text


if __name__ == "__main__":  # python -m flowspec.catalogue [README.md]
    import sys

    changed = update_readme(*(sys.argv[1:2] or []))
    print("README catalogue updated" if changed else "README catalogue already current")
