"""Reading one data file into checked float32 tensors: ``.csv``/``.tsv`` (header row),
``.npy``, ``.npz`` and ``.safetensors`` (named arrays), with an optional context.

Every value is checked once, when the file is read, and a problem is reported where
the user can find it: the csv line as an editor numbers it and the column's name,
or the array name and index. Large csv files take numpy's C parser (6-8x faster
than the csv module); only when it fails is the file rescanned line by line with
the csv module, to say exactly where and why. The dataset built on this is
:mod:`flowspec.data.files`.
"""

from __future__ import annotations

import csv
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspec.data.lazy import is_lazy
from flowspec.errors import DataError, Location, Problem
from flowspec.registry import did_you_mean

#: file suffix -> reader kind
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".npy": "npy", ".npz": "npz",
            ".safetensors": "safetensors"}
_F32_MAX = float(np.finfo(np.float32).max)


def data_error(path: Path | str, message: str, hint: str | None = None,
           line: int | None = None) -> DataError:
    """A DataError at ``file`` or ``file:line`` (1-based, as an editor numbers lines)."""
    return DataError(Problem(message, loc=Location(str(path), line), hint=hint))


def as_names(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def file_kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise data_error(path, f"unknown file type '{path.suffix or '(no extension)'}'",
                         hint="flowspec reads " + ", ".join(SUFFIXES))
    return kind


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- values --------------------------------------------------------------------------------
def first_bad(a: np.ndarray) -> tuple[tuple[int, ...], float]:
    bad = ~np.isfinite(a)
    if a.dtype.itemsize > 4:
        bad |= np.abs(np.where(bad, 0, a)) > _F32_MAX
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return idx, float(a[idx])


def bad_value_error(path: Path | str, what: str, idx: tuple[int, ...], value: float
                    ) -> DataError:
    """The first NaN/inf (or beyond float32) value, at its index and row."""
    kind = "beyond float32's range" if math.isfinite(value) else "not finite"
    return data_error(path, f"{what}: the value at index {list(idx)} (0-based; row "
                      f"{idx[0]}) is {value:g} ({kind})",
                      hint="drop or fix rows with NaN/inf; a density cannot be fitted to them")


def to_float32(a: Any, what: str, path: Path | str) -> torch.Tensor:
    """A numeric array or tensor -> float32 tensor; non-numbers, NaN, inf and values beyond
    float32's range are refused, naming the first bad index."""
    if torch.is_tensor(a):
        t = a.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise data_error(path, f"{what} has dtype {t.dtype}; a density is fitted to real "
                             "numbers", hint="convert it to float")
        if t.is_floating_point() and t.dtype != torch.float32:
            a = t.double().numpy()
        elif t.is_floating_point():
            a = t.numpy()
        else:
            return t.float()
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise data_error(path, f"{what} has dtype {a.dtype}; a density is fitted to real numbers",
                         hint="convert it to float (strings, booleans, objects and complex "
                              "numbers are not data a flow can model)")
    if a.dtype.kind == "f":
        finite = np.isfinite(a).all() and (a.dtype.itemsize <= 4 or a.size == 0
                                           or float(np.abs(a).max()) <= _F32_MAX)
        if not finite:
            raise bad_value_error(path, what, *first_bad(a))
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# -- csv ------------------------------------------------------------------------------------
def _open_text(path: Path):
    return open(path, newline="", encoding="utf-8-sig")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: delimiters recognised in csv files, by name (for messages)
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def detect_delimiter(path: Path, probe_lines: int = 50) -> str:
    """The field separator: the suffix's (``,`` for .csv, tab for .tsv) unless it splits
    the first lines into one field each while another (``;``, tab, ``|``, ``,``) splits
    every one of them into the same number (> 1) of fields, as European exports do."""
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with _open_text(path) as fh:
            lines = []
            for line in fh:
                if line.strip():
                    lines.append(line)
                if len(lines) >= probe_lines:
                    break
    except UnicodeDecodeError:
        return default
    if not lines:
        return default

    def widths(sep: str) -> set[int]:
        return {len(row) for row in csv.reader(lines, delimiter=sep)}

    w = widths(default)
    if len(w) == 1 and min(w) > 1:
        return default
    for sep in DELIMITERS:
        if sep != default:
            w = widths(sep)
            if len(w) == 1 and min(w) > 1:
                return sep
    return default


def csv_header(path: Path) -> tuple[list[str], int]:
    """The column names and the (1-based) line of the header row."""
    delimiter = detect_delimiter(path)
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            for row in reader:
                if any(cell.strip() for cell in row):
                    names = [c.strip() for c in row]
                    line = reader.line_num
                    break
            else:
                raise data_error(path, "empty file",
                                 hint="a csv starts with a header row naming the columns, "
                                      "e.g. x1,x2,x3")
    except UnicodeDecodeError:
        raise data_error(path, "not a text (UTF-8) csv file",
                         hint="use .npy/.npz/.safetensors for binary arrays") from None
    if all(_is_number(n) for n in names if n):
        raise data_error(path, "the first row holds numbers, not column names", line=line,
                         hint="add a header line naming the columns (e.g. x1,x2,...); the first "
                              "row would otherwise be lost")
    for i, name in enumerate(names):
        if not name:
            raise data_error(path, f"field {i + 1} of the header has no name", line=line,
                             hint="name every column")
        if name in names[:i]:
            raise data_error(path, f"column name '{name}' appears twice (fields "
                             f"{names.index(name) + 1} and {i + 1})", line=line,
                             hint="make column names unique")
    return names, line


def _column_indices(path: Path, header: list[str], wanted: list[str], line: int) -> list[int]:
    out = []
    for name in wanted:
        if name not in header:
            sug = did_you_mean(name, header)
            seps = sorted({DELIMITERS[c] for h in header for c in h if c in DELIMITERS})
            raise data_error(path, f"no column '{name}' in the header", line=line,
                             hint=f"did you mean '{sug[0]}'?" if sug else
                             f"columns: {', '.join(header)}" + (
                                 f" (the names hold a {' and '.join(seps)}: separate every "
                                 "row's fields the same way, with commas in a .csv, tabs in a "
                                 ".tsv)" if seps else ""))
        out.append(header.index(name))
    return out


def _scan_csv(path: Path, header_line: int, idx: list[int], names: list[str]) -> np.ndarray:
    """The slow, exact reader: the first problem as ``file:line: column 'name': ...``."""
    delimiter = detect_delimiter(path)
    rows: list[list[float]] = []
    need = max(idx) + 1
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        for row in reader:
            if reader.line_num <= header_line or not any(c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) < need:
                missing = names[[i for i, j in enumerate(idx) if j >= len(row)][0]]
                raise data_error(path, f"the row has {len(row)} fields; column '{missing}' is "
                                 f"field {need} of the header", line=line,
                                 hint="every row needs a value in every chosen column")
            values = []
            for j, name in zip(idx, names):
                cell = row[j].strip()
                if not cell:
                    raise data_error(path, f"column '{name}': empty value", line=line,
                                     hint="fill it in or drop the row")
                try:
                    v = float(cell)
                except ValueError:
                    sep = DELIMITERS.get(delimiter, repr(delimiter))
                    decimal = "," in cell and _is_number(cell.replace(",", "."))
                    raise data_error(path, f"column '{name}': '{cell}' is not a number "
                                     f"(fields separated by {sep})", line=line,
                                     hint="decimal commas are not read: write 1.5, not 1,5"
                                     if decimal else "choose numeric columns with `columns:`; "
                                     "other columns are ignored") from None
                if not math.isfinite(v):
                    raise data_error(path, f"column '{name}': {cell} is not finite", line=line,
                                     hint="drop or fix rows with NaN/inf; a density cannot be "
                                          "fitted to them")
                if abs(v) > _F32_MAX:
                    raise data_error(path, f"column '{name}': {cell} is beyond float32's range",
                                     line=line, hint="rescale the column")
                values.append(v)
            rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(idx))


def read_csv(path: Path, columns: list[str], context: list[str]
             ) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str]]:
    """``(x, context, x names, context names)`` as float64 arrays ``[N, D]``, ``[N, K]``."""
    header, line = csv_header(path)
    ctx_names = list(context)
    x_names = list(columns) or [h for h in header if h not in ctx_names]
    both = sorted(set(x_names) & set(ctx_names))
    if both:
        raise data_error(path, f"column(s) {both} are both data and context",
                         hint="a column is either in `columns` or in `context`")
    if not x_names:
        raise data_error(path, "no data columns left (every column is context)",
                         hint="choose the data columns with `columns:`")
    names = x_names + ctx_names
    idx = _column_indices(path, header, names, line)
    delimiter = detect_delimiter(path)
    table = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": checked below
            table = np.loadtxt(path, delimiter=delimiter, skiprows=line, usecols=idx,
                               ndmin=2, dtype=np.float64, comments=None, quotechar='"',
                               encoding="utf-8")
        table = table.reshape(-1, len(idx))
        if not (np.isfinite(table).all() and np.abs(table).max(initial=0.0) <= _F32_MAX):
            table = None
    except (ValueError, TypeError, UnicodeDecodeError):
        table = None
    if table is None:  # numpy's parser failed or saw NaN/inf: find the line and column
        table = _scan_csv(path, line, idx, names)
    if table.shape[0] == 0:
        raise data_error(path, "no data rows after the header", line=line,
                         hint="the file has a header but no values")
    d = len(x_names)
    return table[:, :d], (table[:, d:] if ctx_names else None), x_names, ctx_names


# -- arrays ---------------------------------------------------------------------------------
class _Arrays:
    """Named arrays of a ``.npz`` or ``.safetensors`` file, read on demand."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind = path, kind
        try:
            if kind == "npz":
                self._npz = np.load(path, allow_pickle=False)
                self.names = list(self._npz.files)
            else:
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as fh:
                    self.names = list(fh.keys())
        except Exception as err:  # zip, header or format errors of a corrupt file
            raise data_error(path, f"not a readable .{kind} file ({err})",
                             hint="write it with numpy.savez / safetensors save_file") from None
        if not self.names:
            self.close()
            raise data_error(path, "empty file (no arrays)")

    def close(self) -> None:
        if self.kind == "npz":
            self._npz.close()

    def get(self, name: str) -> Any:
        if name not in self.names:
            sug = did_you_mean(name, self.names)
            raise data_error(self.path, f"no array '{name}'",
                             hint=f"did you mean '{sug[0]}'?" if sug else
                             f"arrays: {', '.join(self.names)}")
        try:
            if self.kind == "npz":
                return self._npz[name]
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as fh:
                return fh.get_tensor(name)
        except ValueError as err:  # e.g. a pickled object array
            raise data_error(self.path, f"array '{name}' cannot be read ({err})",
                             hint="save plain numeric arrays") from None

    def choose(self, name: str | None, exclude: list[str], what: str) -> str:
        """The named array, else ``x`` if present, else the only one left."""
        if name is not None:
            if name not in self.names:
                self.get(name)  # raises, with did-you-mean
            return name
        rest = [n for n in self.names if n not in exclude]
        if "x" in rest:
            return "x"
        if len(rest) == 1:
            return rest[0]
        raise data_error(self.path, f"{len(rest)} arrays ({', '.join(rest)}): which one is the "
                         f"{what}?", hint=f"name it: `array: {rest[0]}`" if what == "data" else
                         f"name it: `context: {rest[0]}`")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise data_error(path, f"not a readable .npy file ({err})",
                         hint="write it with numpy.save (numeric arrays only)") from None


@dataclass
class Table:
    """What one file gave: float32 tensors and the names they had there."""

    x: torch.Tensor
    context: torch.Tensor | None
    #: csv column names of x / of the context (None for arrays)
    columns: list[str] | None = None
    context_columns: list[str] | None = None
    #: array names in npz/safetensors files
    array: str | None = None
    context_array: str | None = None
    #: x is uint8 images [N, C, H, W] (see :func:`as_images`)
    images: bool = False


def _raw_dtype(a: Any) -> str:
    return str(a.dtype).replace("torch.", "")


def as_images(a: Any, declared: bool | None, what: str, path: Path | str
              ) -> torch.Tensor | None:
    """Image data as uint8 ``[N, C, H, W]``, or None for a table.

    A uint8 array of rank 4 is images unless ``declared`` is False; other arrays are
    images only when ``declared`` is True: integers in 0..255, or floats in [0, 1]
    (rounded to 256 levels); a rank-3 array ``[N, H, W]`` gets one channel."""
    if declared is False or a is None:
        return None
    is_uint8 = a.dtype == (torch.uint8 if torch.is_tensor(a) else np.uint8)
    if declared is None and not (is_uint8 and a.ndim == 4):
        return None
    if not torch.is_tensor(a) and np.asarray(a).dtype.kind not in "fiub":
        raise data_error(path, f"{what} has dtype {a.dtype}; images are numbers")
    t = a.detach().cpu() if torch.is_tensor(a) else torch.from_numpy(np.ascontiguousarray(a))
    rank = t.dim()
    if declared is None:
        return t.contiguous()
    if rank == 3:
        t = t[:, None]
    elif rank != 4:
        raise data_error(path, f"{what} has shape {list(t.shape)}; images are [N, C, H, W] "
                         "(or [N, H, W] for one channel)", hint="remove `images: true`")
    if t.dtype == torch.uint8:
        return t.contiguous()
    if t.dtype == torch.bool or t.is_complex():
        raise data_error(path, f"{what} has dtype {_raw_dtype(a)}; images are numbers")
    if not t.is_floating_point():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise data_error(path, f"{what}: integer images must hold 0..255, found {lo}..{hi}",
                             hint="rescale to 8 bits, or remove `images: true` to fit them as "
                                  "a continuous table")
        return t.to(torch.uint8).contiguous()
    t = t.double()
    if not torch.isfinite(t).all():
        raise data_error(path, f"{what} holds NaN/inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0 or hi > 1:
        raise data_error(path, f"{what}: float images must lie in [0, 1], found "
                         f"[{lo:g}, {hi:g}]", hint="divide by the maximum (255 for 8-bit)")
    return torch.round(t * 255).to(torch.uint8).contiguous()


def _context_from_file(path: Path, which: str | list[str] | None
                       ) -> tuple[Any, list[str] | None, str | None]:
    kind = file_kind(path)
    if kind == "csv":
        names = as_names(which)
        x, _, cols, _ = read_csv(path, names, [])
        return x, cols, None
    if kind == "npy":
        if which is not None:
            raise data_error(path, "a .npy file holds one array; `context` names columns or "
                             "arrays of other formats", hint="remove `context`")
        return _load_npy(path), None, None
    if isinstance(which, list):
        raise data_error(path, "context names one array of this file, not a list",
                         hint="e.g. context: theta")
    arrays = _Arrays(path, kind)
    try:
        name = arrays.choose(which, [], "context")
        return arrays.get(name), None, name
    finally:
        arrays.close()


def read_table(path: Path, *, columns: str | list[str] | None = None,
               array: str | None = None, context: str | list[str] | None = None,
               context_path: Path | None = None, images: bool | None = None) -> Table:
    """Read and check one data file (plus its context file); see the module doc."""
    kind = file_kind(path)
    cols, ctx_cols, x_array, ctx_array = None, None, None, None
    ctx_raw = None
    if columns is not None and kind != "csv":
        raise data_error(path, f"`columns` picks csv columns; a .{kind} file has arrays",
                         hint="use `array: NAME`" if kind != "npy" else "remove `columns`")
    if array is not None and kind != "npz" and kind != "safetensors":
        raise data_error(path, f"`array` names an array of a .npz/.safetensors file, not of a "
                         f".{kind} file", hint="use `columns:` for csv" if kind == "csv" else
                         "remove `array`")
    in_file_context = context if context_path is None else None
    if kind == "csv":
        x_raw, ctx_raw, cols, ctx_cols = read_csv(path, as_names(columns),
                                                  as_names(in_file_context))
        ctx_cols = ctx_cols or None
    elif kind == "npy":
        if in_file_context is not None:
            raise data_error(path, "a .npy file holds one array, so it has no context inside",
                             hint="put the context in `context_path: FILE`, or use a .npz with "
                                  "arrays x and context")
        x_raw = _load_npy(path)
    else:
        if isinstance(in_file_context, list):
            raise data_error(path, f"`context` names one array of a .{kind} file, not a list",
                             hint="e.g. context: theta")
        arrays = _Arrays(path, kind)
        try:
            exclude = [in_file_context] if in_file_context else []
            x_array = arrays.choose(array, exclude, "data")
            if in_file_context == x_array:
                raise data_error(path, f"array '{x_array}' cannot be both data and context")
            x_raw = arrays.get(x_array)
            if in_file_context is not None:
                ctx_array = in_file_context
                ctx_raw = arrays.get(ctx_array)
        finally:
            arrays.close()
    if context_path is not None:
        ctx_raw, ctx_cols, ctx_array = _context_from_file(context_path, context)
    x_what = f"array '{x_array}'" if x_array else "the data"
    if images and kind == "csv":
        raise data_error(path, "`images: true` needs an array file (.npy/.npz/.safetensors) of "
                         "shape [N, C, H, W]", hint="save the images with numpy.save")
    pictures = as_images(x_raw, images, x_what, path) if kind != "csv" else None
    x = pictures if pictures is not None else to_float32(x_raw, x_what, path)
    if x.dim() < 2:
        shape = list(x.shape)
        raise data_error(path, f"{x_what} has shape {shape}: expected one row per example, "
                         "[N, D] (or [N, C, H, W])",
                         hint=f"for {shape[0] if shape else 1} examples of one feature, save "
                              "x.reshape(-1, 1)")
    if x.shape[0] == 0:
        raise data_error(path, f"{x_what} has no rows (empty)")
    ctx = None
    if ctx_raw is not None:
        where = context_path or path
        ctx_what = f"context array '{ctx_array}'" if ctx_array else "the context"
        ctx = to_float32(ctx_raw, ctx_what, where)
        if ctx.dim() == 0:
            raise data_error(where, f"{ctx_what} is a single number; expected one row per example")
        if ctx.dim() == 1:
            ctx = ctx[:, None]
        if ctx.shape[0] != x.shape[0]:
            raise data_error(where, f"{ctx_what} has {ctx.shape[0]} rows but the data has "
                             f"{x.shape[0]}", hint="one context row per data row, in the same "
                                                   "order")
    return Table(x, ctx, cols, ctx_cols, x_array, ctx_array, images=pictures is not None)


def check_not_constant(path: Path, table: Table) -> None:
    """A constant feature has no density (the NLL would fall without bound)."""
    from flowspec.data.columns import check_train_constant

    check_train_constant(path, table.x, table.columns, split="file")


def select_features(path: Path, table: Table, features: list[int] | None,
                    drop: list[int | str] | None) -> Table:
    """Keep ``features`` (array indices) and leave out ``drop`` (indices, or csv names)."""
    if features is None and drop is None:
        return table
    x = table.x
    if x.dim() != 2:
        raise data_error(path, f"`features`/`drop` pick features of [N, D] data; this file's "
                         f"examples have shape {list(x.shape[1:])}",
                         hint="select the part you want when writing the file")
    d = x.shape[1]
    names = table.columns
    if features is not None:
        if names is not None:
            raise data_error(path, "`features` picks indices of an array; a csv has named "
                             "columns", hint="use `columns: [...]`")
        bad = [i for i in features if i >= d]
        if bad:
            raise data_error(path, f"feature index {bad[0]} is out of range: the array has {d} "
                             "features (0-based)")
        keep = list(features)
    else:
        keep = list(range(d))
    for item in drop or []:
        if isinstance(item, str):
            if names is None or item not in names:
                raise data_error(path, f"`drop: {item}`: no such column" if names else
                                 f"`drop: {item}`: an array's features are dropped by index",
                                 hint=f"columns: {', '.join(names)}" if names else
                                 f"e.g. drop: [0] (0 .. {d - 1})")
            j = names.index(item)
        else:
            if item >= d:
                raise data_error(path, f"`drop: {item}` is out of range: the data has {d} "
                                 "features (0-based)")
            j = item
        if j in keep:
            keep.remove(j)
    if not keep:
        raise data_error(path, "no features left after `drop`", hint="keep at least one")
    if is_lazy(x):  # rows read on demand keep their feature selection
        table.x = type(x)(x.reader, x.index, [x.cols[j] for j in keep] if x.cols else keep,
                          x.holes)
    else:
        table.x = x[:, keep].contiguous()
    if names is not None:
        table.columns = [names[j] for j in keep]
    return table
