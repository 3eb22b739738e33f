"""A ``file`` dataset too large to load: its :class:`~flowspec.data.tables.Table` with
rows read on demand (:mod:`flowspec.data.lazy`) and checked in one cached pass
(:mod:`flowspec.data.row_checks`).

``stream: null`` (the default) streams a ``.npy`` or ``.safetensors`` array larger
than :data:`~flowspec.data.lazy.STREAM_BYTES` (1 GiB); ``stream: true`` always does,
``false`` never. Only numeric tables ``[N, ...]`` stream (8-bit image arrays and csv /
npz files are loaded whole: an image folder streams instead, see
:mod:`flowspec.data.folder`). The errors are the in-memory reader's, at the same
file rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flowspec.data.lazy import STREAM_BYTES, LazyRows, open_reader
from flowspec.data.row_checks import row_stats
from flowspec.data.tables import (
    Table,
    _Arrays,
    _context_from_file,
    bad_value_error,
    data_error,
    file_kind,
    to_float32,
)

STREAMABLE = ("npy", "safetensors")


def data_array(path: Path, settings: dict[str, Any]) -> str | None:
    """The name of the data array of a ``.safetensors`` file (None for ``.npy``)."""
    if file_kind(path) != "safetensors":
        return None
    ctx = settings.get("context") if settings.get("context_path") is None else None
    arrays = _Arrays(path, "safetensors")
    try:
        return arrays.choose(settings.get("array"), [ctx] if isinstance(ctx, str) else [],
                             "data")
    finally:
        arrays.close()


def streams(path: Path, settings: dict[str, Any]) -> bool:
    """Whether ``path`` is read on demand (see the module doc); refuses ``stream: true``
    where it cannot be."""
    asked = settings.get("stream")
    if asked is False:
        return False
    kind = file_kind(path)
    if kind not in STREAMABLE:
        if asked:
            raise data_error(path, f"stream: true reads .npy and .safetensors arrays on "
                             f"demand; a .{kind} file is read whole",
                             hint="save the table with numpy.save (or safetensors), or "
                                  "remove `stream`")
        return False
    reader = open_reader(path, kind, data_array(path, settings))
    images = settings.get("images")
    if images or (images is None and reader.dtype == "uint8" and len(reader.shape) == 4):
        if asked:
            raise data_error(path, "stream: true streams tables; 8-bit images are loaded "
                             "whole", hint="a folder of image files streams "
                             "(image_folder: {stream: true}); or remove `stream`")
        return False
    return bool(asked) or reader.nbytes > STREAM_BYTES


def read_streamed(path: Path, settings: dict[str, Any], context_path: Path | None) -> Table:
    """The table of ``path`` with lazily read rows, every value checked (cached pass)."""
    kind = file_kind(path)
    name = data_array(path, settings)
    in_file_context = settings.get("context") if context_path is None else None
    if kind == "npy" and in_file_context is not None:
        raise data_error(path, "a .npy file holds one array, so it has no context inside",
                         hint="put the context in `context_path: FILE`, or use a .npz with "
                              "arrays x and context")
    if settings.get("columns") is not None:
        raise data_error(path, f"`columns` picks csv columns; a .{kind} file has arrays",
                         hint="use `array: NAME`" if kind != "npy" else "remove `columns`")
    if isinstance(in_file_context, list):
        raise data_error(path, f"`context` names one array of a .{kind} file, not a list",
                         hint="e.g. context: theta")
    if in_file_context is not None and in_file_context == name:
        raise data_error(path, f"array '{name}' cannot be both data and context")
    x = _checked_rows(path, kind, name, f"array '{name}'" if name else "the data")
    if len(x.reader.shape) < 2:
        shape = list(x.reader.shape)
        raise data_error(path, f"{'the data' if not name else repr(name)} has shape {shape}: "
                         "expected one row per example, [N, D] (or [N, C, H, W])",
                         hint=f"for {shape[0] if shape else 1} examples of one feature, save "
                              "x.reshape(-1, 1)")
    ctx: Any = None
    ctx_cols = ctx_array = None
    if in_file_context is not None:
        arrays = _Arrays(path, kind)
        try:
            ctx_array = arrays.choose(in_file_context, [], "context")
        finally:
            arrays.close()
        ctx = _checked_rows(path, kind, ctx_array, f"context array '{ctx_array}'")
    elif context_path is not None:
        raw, ctx_cols, ctx_array = _context_from_file(context_path, settings.get("context"))
        what = f"context array '{ctx_array}'" if ctx_array else "the context"
        ctx = to_float32(raw, what, context_path)
        if ctx.dim() == 1:
            ctx = ctx[:, None]
    if ctx is not None and len(ctx) != len(x):
        where = context_path or path
        raise data_error(where, f"the context has {len(ctx)} rows but the data has {len(x)}",
                         hint="one context row per data row, in the same order")
    return Table(x, ctx, None, ctx_cols, name, ctx_array, images=False)


def _checked_rows(path: Path, kind: str, name: str | None, what: str) -> LazyRows:
    """The array's rows, read on demand, after the dtype check and the cached value pass."""
    reader = open_reader(path, kind, name)
    if reader.dtype not in ("bfloat16", "float16"):  # half floats are numbers
        to_float32(np.zeros(0, dtype=reader.dtype), what, path)  # refuses non-numbers
    if reader.shape and reader.shape[0] == 0:
        raise data_error(path, f"{what} has no rows (empty)")
    rows = LazyRows(reader)
    stats = row_stats(rows)
    if stats.bad is not None:
        raise bad_value_error(path, what, tuple(stats.bad[0]), stats.bad[1])
    return rows
