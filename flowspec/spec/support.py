"""``data.dataset.file.support`` -> a ``support`` node first in the flow.

A per-column support is declared where the columns are (the data section), but it
acts inside the flow: this inserts the node (:mod:`flowspec.bijectors.support`)
between the data and the first node, so ``log_prob`` counts its log-det and every
sample is mapped back inside the support.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowspec.graph import GraphIR, NodeIR

#: the inserted node's id and output port
SUPPORT_ID = "data.support"


def declared_support(data: dict | None) -> dict | None:
    dataset = (data or {}).get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("file"), dict):
        return dataset["file"].get("support") or None
    return None


def _header_columns(params: dict, spec_file: str | None) -> list[str] | None:
    """The data columns of a csv named by an absolute path (as ``--data`` writes it) or
    found next to the spec: the header minus the context and dropped columns. None when
    the file is elsewhere (the data dir is known only when the data is read)."""
    from flowspec.data.tables import as_names, csv_header

    path = Path(str(params.get("path") or ""))
    if not path.is_absolute() and spec_file:
        path = Path(spec_file).parent / path
    if path.suffix.lower() not in (".csv", ".tsv") or not path.is_file():
        return None
    try:
        header = csv_header(path)[0]
    except Exception:  # unreadable: the dataset reports it when it reads the file
        return None
    skip = set(as_names(params.get("context"))) | {d for d in params.get("drop") or []
                                                     if isinstance(d, str)}
    return [h for h in header if h not in skip]


def insert_support(graph: GraphIR, data: dict | None, problems: Any, loc: Any = None,
                   spec_file: str | None = None) -> None:
    """Prepend the support node when the data section declares one (problems reported)."""
    from flowspec.data.columns import support_bounds

    support = declared_support(data)
    if support is None:
        return
    path = "data.dataset.file.support"
    if len(graph.input_shape) != 1:
        problems.add(f"support is declared per column of a table; model.input is "
                     f"{list(graph.input_shape)}", path, loc,
                     "put a `support` node in the flow for other shapes")
        return
    params = data["dataset"]["file"]
    columns = params.get("columns")
    names = [columns] if isinstance(columns, str) else columns
    keyed_by_index = all(str(k).isdigit() for k in support)
    if names is None and not keyed_by_index:
        names = _header_columns(params, spec_file)
    try:
        low, high = support_bounds(support, None if keyed_by_index else names,
                                   int(graph.input_shape[0]))
    except ValueError as err:
        problems.add(str(err), path, loc)
        return
    port = f"{SUPPORT_ID}:out"
    for node in graph.nodes:
        node.inputs = [port if p == graph.input_port else p for p in node.inputs]
    for lat in graph.latents:
        lat.input = port if lat.input == graph.input_port else lat.input
        lat.cond = port if lat.cond == graph.input_port else lat.cond
    graph.nodes.insert(0, NodeIR(id=SUPPORT_ID, type="support",
                                 params={"low": low, "high": high},
                                 inputs=[graph.input_port], outputs=[port], path=path, loc=loc))
