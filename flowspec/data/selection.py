"""Every problem of a file dataset's selection at once, with what the model expects.

Pointing a spec at another file (``flowspec train SPEC --data FILE``) keeps its
``array``/``columns``/``context`` settings, which may not fit the new file: a csv has
no arrays, the context columns have other names, and the model's input and context
shapes were chosen for the old data. Reporting these one at a time costs a round trip
each; here they are collected into one error, next to the shapes the model takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flowspec.data.tables import as_names, csv_header, file_kind
from flowspec.errors import DataError, Location, Problem
from flowspec.registry import did_you_mean


def _arrays(path: Path, kind: str) -> list[str] | None:
    try:
        if kind == "npz":
            with np.load(path, allow_pickle=False) as npz:
                return list(npz.files)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return list(fh.keys())
    except Exception:  # unreadable: the reader says why
        return None


def _missing(path: Path, what: str, name: str, known: list[str], line: int | None) -> Problem:
    sug = did_you_mean(name, known)
    return Problem(f"no {what} '{name}'" + (" in the header" if what == "column" else ""),
                   loc=Location(str(path), line),
                   hint=f"did you mean '{sug[0]}'?" if sug else f"{what}s: {', '.join(known)}")


def selection_problems(path: Path, settings: dict[str, Any]) -> tuple[list[Problem], list[str]]:
    """``(problems, what the file offers)`` of ``columns``/``array``/``context`` on ``path``."""
    kind = file_kind(path)
    in_file_context = settings.get("context") if not settings.get("context_path") else None
    problems: list[Problem] = []
    if kind == "csv":
        header, line = csv_header(path)
        if settings.get("array") is not None:
            problems.append(Problem(
                "`array` names an array of a .npz/.safetensors file, not of a .csv file",
                loc=Location(str(path)), hint="--set data.dataset.file.array=null (a csv "
                "has columns: `columns:` picks them)"))
        for name in as_names(settings.get("columns")) + as_names(in_file_context):
            if name not in header:
                problems.append(_missing(path, "column", name, header, line))
        return problems, header
    names = _arrays(path, kind) if kind in ("npz", "safetensors") else []
    if settings.get("columns") is not None:
        problems.append(Problem(f"`columns` picks csv columns; a .{kind} file has arrays",
                                loc=Location(str(path)),
                                hint="--set data.dataset.file.columns=null"))
    if names is None:
        return problems, []
    for key in ("array", "context"):
        value = settings.get(key) if key == "array" else in_file_context
        if isinstance(value, str) and kind != "npy" and value not in names:
            problems.append(_missing(path, "array", value, names, None))
    return problems, names


def check_selection(path: Path, settings: dict[str, Any],
                    model: tuple[tuple[int, ...], tuple[int, ...] | None] | None) -> None:
    """Raise one DataError with every selection problem (and, when known, the shapes the
    model takes, which the new selection must give)."""
    problems, offered = selection_problems(path, settings)
    if not problems:
        return
    if model is not None:
        shape, ctx = model
        wants = f"examples of shape {list(shape)}" + (
            f" and a context of shape {list(ctx)}" if ctx is not None else " and no context")
        kind = "columns" if file_kind(path) == "csv" else "arrays"
        problems.append(Problem(
            f"the model takes {wants}; the file has {kind} {', '.join(offered) or '(none)'}",
            loc=Location(str(path)),
            hint="choose the data and context so that they give these shapes, or change "
                 "model.input / model.context (e.g. --set vars.D=...)"))
    raise DataError(problems)
