"""``load_spec``: YAML -> overrides -> variables -> validation -> Graph IR, all problems at once.

Every stage reports into one :class:`~flowspec.spec.problems.Problems`; a
single :class:`~flowspec.errors.SpecError` lists them all, each at its
``file:line:col`` with a dotted path. Graph and shape checks
(:func:`flowspec.graph.analyse`) run once the model itself lowered cleanly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowspec.errors import Location, Problem, SpecError
from flowspec.graph import GraphIR, analyse
from flowspec.registry import did_you_mean
from flowspec.spec import schema as S
from flowspec.spec.expand import Expander
from flowspec.spec.limits import MAX_SPEC_BYTES
from flowspec.spec.lower import Lowerer
from flowspec.spec.overrides import Override, apply_override, declared_var, parse_overrides
from flowspec.spec.problems import Problems, join_path
from flowspec.spec.source import (
    LDict,
    check_data,
    child_loc,
    dump_yaml,
    located,
    parse_yaml,
    plain,
)
from flowspec.spec.validate import Validator, fill_defaults, show


@dataclass
class Spec:
    """A loaded spec: the resolved document and what it describes."""

    name: str
    #: vars substituted, overrides applied, data/train/sample defaults filled;
    #: repeat and blocks kept as written. Loading it again gives the same Spec.
    document: dict
    graph: GraphIR
    data: dict
    train: dict
    sample: dict
    source: str | None = None
    quick: dict = field(default_factory=dict)

    def to_yaml(self) -> str:
        """The resolved document as YAML (for run directories and checkpoints)."""
        return dump_yaml(self.document)


class SpecText(str):
    """YAML text that is never taken for a file path, whatever it contains (a spec
    stored in a checkpoint is data: a one-line value must not open a file)."""


def load_spec_text(text: str, overrides: list[str] | dict | None = None, *,
                   quick: bool = False) -> Spec:
    """:func:`load_spec` on YAML text, never on a path (for specs read from files' metadata)."""
    return load_spec(SpecText(text), overrides, quick=quick)


def _read(source: str | os.PathLike | dict) -> tuple[Any, str | None, str, list]:
    """-> (located document, file label, default name, load problems)."""
    if isinstance(source, dict):
        check_data(source)
        return located(plain(source), None), None, "spec", []
    if isinstance(source, SpecText) or (isinstance(source, str) and "\n" in source):
        doc, problems = parse_yaml(str(source), None)  # the C parser takes plain str only
        return doc, None, "spec", problems
    path = Path(source)
    if not path.is_file():
        hint = "pass a .yaml file, YAML text, or a dict"
        if path.exists():
            raise SpecError(f"{path} is not a file", hint=hint)
        raise SpecError(f"no such spec file: {path}", hint=hint)
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(Problem(f"the spec is larger than {MAX_SPEC_BYTES:,} bytes", "",
                                    Location(str(path)), "see 'Limits' in docs/spec-language.md"))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read {path}: {err}") from None
    doc, problems = parse_yaml(text, str(path))
    return doc, str(path), path.stem, problems


def _quick_overrides(doc: LDict, problems: Problems) -> list[Override]:
    quick = doc.get("quick")
    if quick is None:
        return []
    if not isinstance(quick, dict):
        problems.add(f"expected a mapping of dotted paths to values, got {show(quick)}",
                     "quick", child_loc(doc, "quick"))
        return []
    return [Override(str(k), v, child_loc(quick, k),
                     quick.key_loc(k) if isinstance(quick, LDict) else None)
            for k, v in quick.items()]


def _check_quick_paths(doc: LDict, problems: Problems) -> None:
    quick = doc.get("quick")
    if not isinstance(quick, dict):
        return
    for key in quick:
        top = str(key).split(".")[0].split("[")[0]
        kloc = quick.key_loc(key) if isinstance(quick, LDict) else None
        if top not in S.TOP_KEYS or top == "quick":
            sug = did_you_mean(top, list(S.TOP_KEYS))
            problems.add(f"unknown section '{top}'", join_path("quick", key), kloc,
                         f"did you mean '{sug[0]}'?" if sug else None)
        elif top == "vars" and str(key).count(".") >= 1:
            declared_var(doc, str(key).split(".")[1], join_path("quick", key), kloc, problems)


def _data(raw: Any, loc: Location | None, validator: Validator, problems: Problems) -> dict:
    from flowspec.data.loader import LOADER_SCHEMA
    from flowspec.data.splits import SPLIT_SCHEMA, split_defaults

    regs = S.registries()
    out: dict[str, Any] = {"dataset": None, "preprocess": [], **split_defaults()}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        problems.add(f"expected a mapping {{dataset: ..., preprocess: [...]}}, got {show(raw)}",
                     "data", loc)
        return out
    validator.check(raw, {"type": "object", "additionalProperties": False,
                          "properties": {"dataset": {}, "preprocess": {"type": "array"},
                                         **SPLIT_SCHEMA, **LOADER_SCHEMA}},
                    "data", loc)
    for key in (*SPLIT_SCHEMA, *LOADER_SCHEMA):  # loader keys only when given
        if key in raw:
            out[key] = plain(raw[key])
    dataset = raw.get("dataset")
    if dataset is not None:
        got = validator.check_named(dataset, regs["dataset"], "data.dataset",
                                    child_loc(raw, "dataset") or loc, what="dataset")
        if got is not None:
            out["dataset"] = _normalized(*got)
    steps = raw.get("preprocess")
    if isinstance(steps, list):
        for i, step in enumerate(steps):
            got = validator.check_named(step, regs["preprocess"], join_path("data.preprocess", i),
                                        child_loc(steps, i) or loc, what="preprocessing step")
            if got is not None:
                out["preprocess"].append(_normalized(*got))
    return out


def _normalized(name: str, params: Any, entry: Any) -> dict:
    """``{name: params}`` with the entry's defaults (as written if nothing to check against)."""
    if entry is None:
        return {name: plain(params)}
    return {name: entry.with_defaults(plain(params))}


def _section(doc: LDict, key: str, schema: dict, validator: Validator,
             problems: Problems) -> dict:
    raw = doc.get(key)
    loc = child_loc(doc, key)
    if raw is None:
        raw = LDict.at(loc)
    if not isinstance(raw, dict):
        problems.add(f"expected a mapping, got {show(raw)}", key, loc)
        raw = LDict.at(loc)
    validator.check(raw, schema, key, loc)
    return fill_defaults(plain(raw), schema)


def load_spec(
    source: str | os.PathLike | dict,
    overrides: list[str] | dict | None = None,
    *,
    quick: bool = False,
) -> Spec:
    """Load, expand, validate and lower a spec; raise one :class:`SpecError` listing every problem.

    ``source`` is a path to a YAML file, YAML text (anything with a newline) or an
    already-parsed dict. ``overrides`` are ``["train.lr=3e-4", "vars.K=4"]`` or
    ``{"vars.K": 4}``; with ``quick``, the spec's own ``quick`` overrides apply
    first.
    """
    from flowspec.train.config import SAMPLE_SCHEMA, TRAIN_SCHEMA

    doc, file, default_name, load_problems = _read(source)
    problems = Problems(file)
    problems.extend(load_problems, poison=True)
    if doc is None:
        doc = LDict.at(Location(file, 1, 1))
    if not isinstance(doc, dict):
        problems.add(f"a spec is a mapping of sections ({', '.join(S.TOP_KEYS)}), got "
                     f"{show(doc)}", "", getattr(doc, "loc", None) or Location(file, 1, 1))
        problems.raise_if_any()
    regs = S.registries()
    validator = Validator(problems, regs)
    expander = Expander(problems)

    quick_map = _apply_overrides(doc, overrides, quick, problems)
    vars_env = expander.resolve_vars(doc.get("vars"), "vars", child_loc(doc, "vars"))
    doc, model_clean = _substitute(doc, vars_env, expander, problems)

    name = _header(doc, default_name, validator, problems)
    data = _data(doc.get("data"), child_loc(doc, "data"), validator, problems)
    train = _section(doc, "train", TRAIN_SCHEMA, validator, problems)
    sample = _section(doc, "sample", SAMPLE_SCHEMA, validator, problems)
    _check_objective(train, regs["objective"], doc, problems)
    from flowspec.spec.noise import check_denoise

    check_denoise(train, sample, problems, child_loc(doc, "sample"))

    before = problems.found
    lowerer = Lowerer(problems, validator, expander, vars_env, regs["node"], regs["prior"], file)
    lowerer.parse_blocks(doc.get("blocks"), child_loc(doc, "blocks"))
    graph = lowerer.model(doc.get("model"), child_loc(doc, "model") or doc.loc)
    if graph is not None and problems.found == before:
        from flowspec.spec.support import insert_support

        insert_support(graph, data, problems, child_loc(doc, "data"), file)
    if graph is not None and problems.found == before:
        from flowspec.spec.dequantize import link_dequantizer

        raw_model = doc.get("model")
        link_dequantizer(graph, data, problems,
                         child_loc(raw_model, "dequantize") if isinstance(raw_model, dict)
                         else None, child_loc(doc, "data"))
    if graph is not None and model_clean and problems.found == before:
        try:  # graph and shape checks need a model that lowered cleanly
            analyse(graph)
            if graph.dequantizer is not None:
                analyse(graph.dequantizer)
        except SpecError as err:
            problems.extend(err.problems)
    problems.raise_if_any()
    if graph is None:  # pragma: no cover - lowering reports why it gave up
        raise SpecError("the model could not be lowered", hint="see flowspec validate")

    document = {"flowspec": 1, "name": name, **plain(doc)}
    document.update(flowspec=1, name=name, data=data, train=train, sample=sample)
    return Spec(name=name, document=document, graph=graph, data=data, train=train,
                sample=sample, source=file, quick=quick_map)


def _check_objective(train: dict, objectives: Any, doc: LDict, problems: Problems) -> None:
    """What the objective itself requires of the ``train`` section (its ``check_spec``)."""
    from flowspec.registry import split_named

    try:
        name, _ = split_named(train.get("objective"))
    except ValueError:
        return  # reported by the schema
    if name not in objectives:
        return  # reported by the schema, with a did-you-mean
    raw = doc.get("train")
    loc = (child_loc(raw, "objective") if isinstance(raw, dict) else None) \
        or child_loc(doc, "train")
    for path, message, hint in objectives.get(name).obj.check_spec(train):
        problems.add(message, path, loc, hint)


def _apply_overrides(doc: LDict, overrides: list[str] | dict | None, quick: bool,
                     problems: Problems) -> dict:
    """Check top-level keys, apply ``quick`` (if asked) then ``overrides``; -> the quick map."""
    for key in list(doc):
        if key not in S.TOP_KEYS:
            sug = did_you_mean(str(key), list(S.TOP_KEYS))
            problems.add(f"unknown section '{key}'", str(key), doc.key_loc(key),
                         f"did you mean '{sug[0]}'?" if sug else
                         "sections: " + ", ".join(S.TOP_KEYS))
    if not quick:  # applying them checks them
        _check_quick_paths(doc, problems)
    quick_map = plain(doc.get("quick")) if isinstance(doc.get("quick"), dict) else {}
    todo = (_quick_overrides(doc, problems) if quick else []) + parse_overrides(overrides,
                                                                                problems)
    for ov in todo:
        apply_override(doc, ov, problems)
    return quick_map


def _substitute(doc: LDict, vars_env: dict, expander: Expander,
                problems: Problems) -> tuple[LDict, bool]:
    """The document with vars substituted; and whether model/blocks had no problem."""
    resolved = LDict.at(doc.loc)
    model_found = 0
    for key, value in doc.items():
        before = problems.found
        vloc, kloc = child_loc(doc, key), doc.key_loc(key)
        if key == "vars":
            new = located(vars_env, vloc)
        elif key == "quick":
            new = value  # substituted once applied
        elif key == "blocks":
            new = _substitute_blocks(value, vars_env, expander, vloc)
        else:
            new = expander.substitute(value, vars_env, key, vloc, scoped=(key == "model"))
        resolved.put(key, new, vloc, kloc)
        if key in ("model", "blocks"):
            model_found += problems.found - before
    return resolved, model_found == 0


def _header(doc: LDict, default_name: str, validator: Validator, problems: Problems) -> str:
    version = doc.get("flowspec", 1)
    if version != 1:
        problems.add(f"unsupported language version {show(version)} (this is flowspec 1)",
                     "flowspec", child_loc(doc, "flowspec"))
    name = doc.get("name", default_name)
    validator.check(name, {"type": "string", "pattern": S.NAME_PATTERN,
                           "description": "a name of letters, digits, _ . + -"},
                    "name", child_loc(doc, "name"))
    validator.check(doc.get("description"), {"type": ["string", "null"]}, "description",
                    child_loc(doc, "description"))
    return name if isinstance(name, str) else default_name


def _substitute_blocks(raw: Any, vars_env: dict, expander: Expander,
                       loc: Location | None) -> Any:
    """Blocks: a block's parameters are local inside its flow; defaults see only vars."""
    if not isinstance(raw, dict):
        return expander.substitute(raw, vars_env, "blocks", loc)
    out = LDict.at(getattr(raw, "loc", None) or loc)
    for name, body in raw.items():
        bpath, bloc = join_path("blocks", name), child_loc(raw, name) or loc
        if isinstance(body, dict):
            params = body.get("params")
            names = params if isinstance(params, (dict, list)) else ()
            local = frozenset(p for p in names if isinstance(p, str))
            new = LDict.at(getattr(body, "loc", None) or bloc)
            for key, value in body.items():
                kpath, kloc = join_path(bpath, key), child_loc(body, key) or bloc
                sub = expander.substitute(value, vars_env, kpath, kloc,
                                          local=local if key == "flow" else frozenset(),
                                          scoped=True)
                new.put(key, sub, kloc, body.key_loc(key) if isinstance(body, LDict) else kloc)
        else:
            new = expander.substitute(body, vars_env, bpath, bloc, scoped=True)
        out.put(name, new, bloc, raw.key_loc(name) if isinstance(raw, LDict) else bloc)
    return out
