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
from dataclasses import dataclass
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
    return schema_rows(entry.schema)


def schema_rows(schema: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) per property of an object schema."""
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
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


def transformer_inverse_kind(entry: Entry) -> str:
    """How a transformer is inverted, for the catalogue."""
    cls = entry.obj
    if getattr(cls, "analytic_inverse", True):
        return "analytic"
    return f"numerical (tol {getattr(cls, 'tolerance', 0):g})"


def registry_markdown(reg: Registry, title: str) -> str:
    lines = [f"### {title}", ""]
    for entry in public(reg):
        head = f"#### `{entry.name}`"
        if entry.category:
            head += f" · {entry.category}"
        lines += [head, "", doc_markdown(entry.doc), ""]
        if reg.kind == "node":
            lines += [f"Inverse: {inverse_kind(entry)}.", ""]
        if reg.kind == "transformer":
            lines += [f"Inverse: {transformer_inverse_kind(entry)}.", ""]
        rows = param_rows(entry)
        if rows:
            lines += ["| parameter | type | default | description |", "| --- | --- | --- | --- |"]
            lines += [f"| `{n}` | {t} | {d} | {doc_markdown(desc)} |" for n, t, d, desc in rows]
            lines.append("")
    return "\n".join(lines)


def catalogue_markdown() -> str:
    """The catalogue of every registry in Markdown (README, ``flowspec nodes --markdown``)."""
    return "\n".join(registry_markdown(reg, title) for reg, title in registries())


# -- training options: not registries, but names users look up (`flowspec nodes adamw`) --
@dataclass(frozen=True)
class TrainOption:
    """A name in the spec's ``train`` section: an optimizer, a schedule or a key."""

    name: str
    kind: str  # "optimizer", "schedule", "optimizer parameter", "train key"
    doc: str
    schema: dict[str, Any]


_OPTIMIZER_DOCS = {
    "adam": "Adam (torch.optim.Adam, fused kernel where possible); the default, "
            "``{adam: {lr: 1.0e-3}}``. ``weight_decay`` here is L2 added to the gradient.",
    "adamw": "AdamW (torch.optim.AdamW): Adam with decoupled weight decay -- the one to "
             "use with ``weight_decay`` (e.g. ``{adamw: {lr: 1.0e-3, weight_decay: "
             "1.0e-4}}``), which regularises small data.",
    "sgd": "Stochastic gradient descent (torch.optim.SGD), with ``momentum``.",
}
_SCHEDULE_DOCS = {
    "constant": "learning-rate schedule (``train.schedule: constant``, the default): the "
                "optimizer's lr after the ``warmup_steps`` warm-up.",
    "cosine": "learning-rate schedule (``train.schedule: cosine``): after the warm-up, "
              "cosine decay from the optimizer's lr to 0 at the last step.",
}


def train_options() -> list[TrainOption]:
    """Optimizers, schedules, ``weight_decay`` and every ``train`` key, from the train
    schema (:mod:`flowspec.train.config`), for ``flowspec nodes NAME`` and the docs."""
    from flowspec.train.config import OPTIMIZER_SCHEMA, TRAIN_SCHEMA

    per_optimizer = OPTIMIZER_SCHEMA["oneOf"][1]["properties"]
    out = [TrainOption(name, "optimizer", _OPTIMIZER_DOCS.get(name, ""), per_optimizer[name])
           for name in per_optimizer]
    out += [TrainOption(name, "schedule", doc, {}) for name, doc in _SCHEDULE_DOCS.items()]
    out.append(TrainOption(
        "weight_decay", "optimizer parameter",
        "``train.optimizer.<adam|adamw|sgd>.weight_decay`` (default 0): pulls weights to 0 "
        "every step; with ``adamw`` it is decoupled from the gradient. E.g. ``--set "
        "train.optimizer=adamw --set train.optimizer.adamw.weight_decay=1e-4``.", {}))
    for key, sch in TRAIN_SCHEMA["properties"].items():
        default = f" (default ``{json.dumps(sch['default'])}``)" if "default" in sch else ""
        doc = (sch.get("description") or "").strip()
        out.append(TrainOption(key, "train key", f"``train.{key}``{default}"
                               + (f": {doc}" if doc else ""),
                               sch if sch.get("type") == "object" else {}))
    return out


def find_train_option(name: str) -> list[TrainOption]:
    """The training options called ``name`` (empty when none)."""
    return [o for o in train_options() if o.name == name]


def train_options_markdown() -> str:
    """The training options as Markdown (docs/spec-language.md's generated section)."""
    lines = ["| name | what | description |", "| --- | --- | --- |"]
    for o in train_options():
        text = doc_markdown(o.doc).replace("|", "\\|")
        params = ", ".join(f"`{n}`" for n, *_ in schema_rows(o.schema))
        lines.append(f"| `{o.name}` | {o.kind} | {text}"
                     + (f" Parameters: {params}." if params else "") + " |")
    return "\n".join(lines)


TRAIN_START, TRAIN_END = "<!-- train-options:start -->", "<!-- train-options:end -->"


START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def _update_section(path: str, start: str, end: str, body: str) -> bool:
    from pathlib import Path

    p = Path(path)
    text = p.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body}\n{end}{tail}"
    p.write_text(new)
    return new != text


def update_readme(path: str = "README.md") -> bool:
    """Rewrite the generated catalogue section of the README; True if it changed."""
    return _update_section(path, START, END, catalogue_markdown())


def update_spec_language(path: str = "docs/spec-language.md") -> bool:
    """Rewrite the generated training-options section of the spec language doc."""
    return _update_section(path, TRAIN_START, TRAIN_END, train_options_markdown())


if __name__ == "__main__":  # python -m flowspec.catalogue [README.md]
    import sys

    changed = update_readme(*(sys.argv[1:2] or []))
    print("README catalogue updated" if changed else "README catalogue already current")
    if not sys.argv[1:2]:
        changed = update_spec_language()
        print("docs/spec-language.md training options updated" if changed else
              "docs/spec-language.md training options already current")
