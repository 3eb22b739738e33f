"""The catalogue of registered things, generated from the registries (for docs and the CLI)."""

from __future__ import annotations

import json
from typing import Any

from flowspec.bijectors import NODES
from flowspec.distributions import PRIORS
from flowspec.nets import NETS
from flowspec.registry import Entry, Registry


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
    analytic = getattr(cls, "analytic", "both")
    if analytic == "both":
        return "analytic"
    solved = "forward" if analytic == "inverse" else "inverse"
    return f"{solved} numerical (tol {getattr(cls, 'tolerance', 0):g})"


def registry_markdown(reg: Registry, title: str, with_inverse: bool = False) -> str:
    lines = [f"### {title}", ""]
    for entry in reg:
        if entry.name.startswith("_"):  # private (test-only) registrations
            continue
        head = f"#### `{entry.name}`"
        if entry.category:
            head += f" · {entry.category}"
        lines += [head, "", entry.doc or "", ""]
        if with_inverse:
            lines += [f"Inverse: {inverse_kind(entry)}.", ""]
        rows = param_rows(entry)
        if rows:
            lines += ["| parameter | type | default | description |", "| --- | --- | --- | --- |"]
            lines += [f"| `{n}` | {t} | {d} | {desc} |" for n, t, d, desc in rows]
            lines.append("")
    return "\n".join(lines)


def catalogue_markdown() -> str:
    """Node, net and prior catalogue in Markdown (README, ``flowspec nodes --markdown``)."""
    return "\n".join([
        registry_markdown(NODES, "Bijector nodes", with_inverse=True),
        registry_markdown(NETS, "Conditioner networks"),
        registry_markdown(PRIORS, "Priors"),
    ])


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
