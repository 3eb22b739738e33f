"""Scoring new data with a trained flow: one log-density per row of a new file.

Anomaly detection is the commonest use of a tabular density. A new file is read with
the run's own selection -- the same columns (or array, features, context) as the
training file, pinned in the run's stored spec -- and the same checks (numbers only,
NaN/inf located, the declared support), but it is not split and may hold a single
row. Dequantized columns get one fixed-seed noise draw, as in ``flowspec eval``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flowspec.data.base import DataSplit
from flowspec.data.columns import check_in_support
from flowspec.data.tables import data_error, file_kind, read_table, select_features
from flowspec.errors import DataError


def _run_selection(spec: Any) -> dict[str, Any]:
    """The training file's parameters, as pinned in the run's spec ({} for other data)."""
    dataset = (getattr(spec, "data", None) or {}).get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("file"), dict):
        return dict(dataset["file"])
    return {}


def read_new_rows(spec: Any, path: str | os.PathLike) -> DataSplit:
    """``path`` read as the run read its training file (all rows, no split)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise data_error(path, "no such file" if not path.exists() else "not a file",
                         hint="give the path of the rows to score")
    sel = _run_selection(spec)
    if sel.get("context_path"):
        raise data_error(path, "the run read its context from a separate file "
                         f"({sel['context_path']}); a file to score must hold the context "
                         "itself", hint="put the context columns (csv) or array (npz) in it")
    kind = file_kind(path)
    train_kind = file_kind(Path(sel["path"])) if sel.get("path") else kind
    columns = sel.get("columns") if kind == "csv" and train_kind == "csv" else None
    array = sel.get("array") if kind in ("npz", "safetensors") else None
    context = sel.get("context")
    if kind == "npy" and context is not None:
        raise data_error(path, "the run is conditional, and a .npy file holds one array, so "
                         "no context", hint="write the rows with their context as a csv or npz")
    table = read_table(path, columns=columns, array=array, context=context,
                       images=sel.get("images"))
    if kind != "csv" or train_kind != "csv":
        table = select_features(path, table, sel.get("features"), sel.get("drop"))
    if sel.get("support"):
        try:
            check_in_support(path, table.x, table.columns, sel["support"], "scored")
        except ValueError as err:
            raise data_error(path, f"support: {err}") from None
    return DataSplit(x=table.x, context=table.context)


@torch.no_grad()
def score_rows(flow: Any, path: str | os.PathLike, *, data_dir: Any = None,
               batch_size: int = 1024, seed: int = 0) -> tuple[torch.Tensor, DataSplit]:
    """``(log p per row in nats, float64 [N]; the rows read)`` of ``flow`` on ``path``."""
    rows = read_new_rows(flow.spec, path)
    prep = _preprocessing(flow, data_dir)
    want = tuple(prep.in_shape) if prep is not None else tuple(flow.input_shape)
    if tuple(rows.x.shape[1:]) != want:
        raise data_error(path, f"the rows have shape {list(rows.x.shape[1:])}; the run was "
                         f"trained on {list(want)}", hint="score a file with the training "
                         "file's columns (or arrays)")
    if flow.context_shape is not None and flow.num_classes is None and rows.context is None:
        raise data_error(path, f"the flow is conditional on a context of shape "
                         f"{list(flow.context_shape)}, but the file gives none",
                         hint="include the context columns (or array) the run was trained with")
    if flow.context_shape is None and rows.context is not None:
        raise data_error(path, "the file gives a context, but the flow is not conditional")
    was = flow.training
    flow.eval()
    out = []
    ref = flow.reference_tensor()
    try:
        for b, start in enumerate(range(0, rows.x.shape[0], batch_size)):
            gen = torch.Generator(device=ref.device).manual_seed(seed * 1_000_003 + b)
            xb = rows.x[start:start + batch_size].to(ref.device)
            x = prep(xb, generator=gen) if prep is not None else xb
            cb = rows.context[start:start + batch_size] if rows.context is not None else None
            out.append(flow.log_prob(x, cb).double().cpu())
    finally:
        flow.train(was)
    return torch.cat(out), rows


def _preprocessing(flow: Any, data_dir: Any) -> Any:
    """The run's preprocessing (built on its training data, whose statistics choose the
    dequantization bins); None when the run had none and its data is not at hand."""
    from flowspec.data import open_spec_dataset

    try:
        return open_spec_dataset(flow.spec, data_dir)[1]
    except DataError:
        if (getattr(flow.spec, "data", None) or {}).get("preprocess"):
            raise
        return None
