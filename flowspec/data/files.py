"""Your own data: the ``file`` dataset reads ``.csv``/``.tsv``, ``.npy``, ``.npz`` and
``.safetensors`` files, with an optional context for conditional densities ``p(x | c)``.

```yaml
data:
  dataset:
    file:
      path: measurements.csv       # relative: the data dir, then the spec's directory
      columns: [x1, x2, x3]        # csv: the data columns (default: all but the context)
      context: [temperature]       # csv: context columns; npz/safetensors: an array name
      test_fraction: 0.2           # seeded split (seed), or test_path: other.csv
```

Every value is checked once, when the file is read, and a problem is reported where
the user can find it: the csv line as an editor numbers it and the column's name,
or the array name and index. What is read and how it was split is recorded in the
run's ``run.json`` (:meth:`FileSource.record`); when a run starts, the stored spec
pins the resolved path, the column/array names and the file's sha256
(:func:`pin_spec`), so ``flowspec eval RUN`` later reads the same data from any
directory -- or refuses, if the file changed.

Large csv files take numpy's C parser (6-8x faster than the csv module); only
when it fails is the file rescanned line by line with the csv module, to say
exactly where and why.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspec.data.base import DATASETS, DataSource, DataSplit
from flowspec.data.splits import carve_indices, take
from flowspec.errors import DataError, Location, Problem
from flowspec.registry import did_you_mean, params_schema

#: file suffix -> reader kind
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".npy": "npy", ".npz": "npz",
            ".safetensors": "safetensors"}
#: when neither test_fraction nor test_path is given
DEFAULT_TEST_FRACTION = 0.2
_F32_MAX = float(np.finfo(np.float32).max)
_NAMES = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                         "minItems": 1}, {"type": "null"}]}


def _error(path: Path | str, message: str, hint: str | None = None,
           line: int | None = None) -> DataError:
    """A DataError at ``file`` or ``file:line`` (1-based, as an editor numbers lines)."""
    return DataError(Problem(message, loc=Location(str(path), line), hint=hint))


def _names(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def file_kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise _error(path, f"unknown file type '{path.suffix or '(no extension)'}'",
                     hint="flowspec reads " + ", ".join(SUFFIXES))
    return kind


def resolve_data_path(value: str, data_dir: Path | None, spec_dir: Path | None,
                      what: str = "path") -> tuple[Path, str]:
    """``(path, where)`` with ``where`` in ``absolute | data_dir | spec_dir``.

    A relative path is looked up in the data dir (``--data-dir``, ``$FLOWSPEC_DATA``,
    ``./data``) first, then in the directory of the spec file.
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        if not p.is_file():
            raise _error(p, f"{what}: no such file" if not p.exists() else
                         f"{what}: not a file", hint="check the path")
        return p, "absolute"
    tried = []
    for base, where in ((data_dir, "data_dir"), (spec_dir, "spec_dir")):
        if base is None:
            continue
        cand = Path(base) / p
        tried.append(str(cand))
        if cand.is_file():
            return cand, where
    raise _error(value, f"{what}: no such file (looked for {' and '.join(tried)})",
                 hint="relative paths are looked up in the data dir (--data-dir, "
                      "$FLOWSPEC_DATA, ./data), then next to the spec; or give an absolute "
                      "path, or `flowspec train SPEC --data FILE`")


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- values --------------------------------------------------------------------------------
def _first_bad(a: np.ndarray) -> tuple[tuple[int, ...], float]:
    bad = ~np.isfinite(a)
    if a.dtype.itemsize > 4:
        bad |= np.abs(np.where(bad, 0, a)) > _F32_MAX
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return idx, float(a[idx])


def to_float32(a: Any, what: str, path: Path | str) -> torch.Tensor:
    """A numeric array or tensor -> float32 tensor; non-numbers, NaN, inf and values beyond
    float32's range are refused, naming the first bad index."""
    if torch.is_tensor(a):
        t = a.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise _error(path, f"{what} has dtype {t.dtype}; a density is fitted to real "
                         "numbers", hint="convert it to float")
        if t.is_floating_point() and t.dtype != torch.float32:
            a = t.double().numpy()
        elif t.is_floating_point():
            a = t.numpy()
        else:
            return t.float()
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise _error(path, f"{what} has dtype {a.dtype}; a density is fitted to real numbers",
                     hint="convert it to float (strings, booleans, objects and complex "
                          "numbers are not data a flow can model)")
    if a.dtype.kind == "f":
        finite = np.isfinite(a).all() and (a.dtype.itemsize <= 4 or a.size == 0
                                           or float(np.abs(a).max()) <= _F32_MAX)
        if not finite:
            idx, value = _first_bad(a)
            kind = "beyond float32's range" if math.isfinite(value) else "not finite"
            raise _error(path, f"{what}: the value at index {list(idx)} (0-based; row "
                         f"{idx[0]}) is {value:g} ({kind})",
                         hint="drop or fix rows with NaN/inf; a density cannot be fitted to "
                              "them")
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


def csv_header(path: Path) -> tuple[list[str], int]:
    """The column names and the (1-based) line of the header row."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            for row in reader:
                if any(cell.strip() for cell in row):
                    names = [c.strip() for c in row]
                    line = reader.line_num
                    break
            else:
                raise _error(path, "empty file", hint="a csv starts with a header row naming "
                                                      "the columns, e.g. x1,x2,x3")
    except UnicodeDecodeError:
        raise _error(path, "not a text (UTF-8) csv file",
                     hint="use .npy/.npz/.safetensors for binary arrays") from None
    if all(_is_number(n) for n in names if n):
        raise _error(path, "the first row holds numbers, not column names", line=line,
                     hint="add a header line naming the columns (e.g. x1,x2,...); the first "
                          "row would otherwise be lost")
    for i, name in enumerate(names):
        if not name:
            raise _error(path, f"field {i + 1} of the header has no name", line=line,
                         hint="name every column")
        if name in names[:i]:
            raise _error(path, f"column name '{name}' appears twice (fields "
                         f"{names.index(name) + 1} and {i + 1})", line=line,
                         hint="make column names unique")
    return names, line


def _column_indices(path: Path, header: list[str], wanted: list[str], line: int) -> list[int]:
    out = []
    for name in wanted:
        if name not in header:
            sug = did_you_mean(name, header)
            raise _error(path, f"no column '{name}' in the header", line=line,
                         hint=f"did you mean '{sug[0]}'?" if sug else
                         f"columns: {', '.join(header)}")
        out.append(header.index(name))
    return out


def _scan_csv(path: Path, header_line: int, idx: list[int], names: list[str]) -> np.ndarray:
    """The slow, exact reader: the first problem as ``file:line: column 'name': ...``."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
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
                raise _error(path, f"the row has {len(row)} fields; column '{missing}' is "
                             f"field {need} of the header", line=line,
                             hint="every row needs a value in every chosen column")
            values = []
            for j, name in zip(idx, names):
                cell = row[j].strip()
                if not cell:
                    raise _error(path, f"column '{name}': empty value", line=line,
                                 hint="fill it in or drop the row")
                try:
                    v = float(cell)
                except ValueError:
                    raise _error(path, f"column '{name}': '{cell}' is not a number", line=line,
                                 hint="choose numeric columns with `columns:`; other columns "
                                      "are ignored") from None
                if not math.isfinite(v):
                    raise _error(path, f"column '{name}': {cell} is not finite", line=line,
                                 hint="drop or fix rows with NaN/inf; a density cannot be "
                                      "fitted to them")
                if abs(v) > _F32_MAX:
                    raise _error(path, f"column '{name}': {cell} is beyond float32's range",
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
        raise _error(path, f"column(s) {both} are both data and context",
                     hint="a column is either in `columns` or in `context`")
    if not x_names:
        raise _error(path, "no data columns left (every column is context)",
                     hint="choose the data columns with `columns:`")
    names = x_names + ctx_names
    idx = _column_indices(path, header, names, line)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
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
        raise _error(path, "no data rows after the header", line=line,
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
            raise _error(path, f"not a readable .{kind} file ({err})",
                         hint="write it with numpy.savez / safetensors save_file") from None
        if not self.names:
            self.close()
            raise _error(path, "empty file (no arrays)")

    def close(self) -> None:
        if self.kind == "npz":
            self._npz.close()

    def get(self, name: str) -> Any:
        if name not in self.names:
            sug = did_you_mean(name, self.names)
            raise _error(self.path, f"no array '{name}'",
                         hint=f"did you mean '{sug[0]}'?" if sug else
                         f"arrays: {', '.join(self.names)}")
        try:
            if self.kind == "npz":
                return self._npz[name]
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as fh:
                return fh.get_tensor(name)
        except ValueError as err:  # e.g. a pickled object array
            raise _error(self.path, f"array '{name}' cannot be read ({err})",
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
        raise _error(self.path, f"{len(rest)} arrays ({', '.join(rest)}): which one is the "
                     f"{what}?", hint=f"name it: `array: {rest[0]}`" if what == "data" else
                     f"name it: `context: {rest[0]}`")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise _error(path, f"not a readable .npy file ({err})",
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


def _context_from_file(path: Path, which: str | list[str] | None
                       ) -> tuple[Any, list[str] | None, str | None]:
    kind = file_kind(path)
    if kind == "csv":
        names = _names(which)
        x, _, cols, _ = read_csv(path, names, [])
        return x, cols, None
    if kind == "npy":
        if which is not None:
            raise _error(path, "a .npy file holds one array; `context` names columns or "
                         "arrays of other formats", hint="remove `context`")
        return _load_npy(path), None, None
    if isinstance(which, list):
        raise _error(path, "context names one array of this file, not a list",
                     hint="e.g. context: theta")
    arrays = _Arrays(path, kind)
    try:
        name = arrays.choose(which, [], "context")
        return arrays.get(name), None, name
    finally:
        arrays.close()


def read_table(path: Path, *, columns: str | list[str] | None = None,
               array: str | None = None, context: str | list[str] | None = None,
               context_path: Path | None = None) -> Table:
    """Read and check one data file (plus its context file); see the module doc."""
    kind = file_kind(path)
    cols, ctx_cols, x_array, ctx_array = None, None, None, None
    ctx_raw = None
    if columns is not None and kind != "csv":
        raise _error(path, f"`columns` picks csv columns; a .{kind} file has arrays",
                     hint="use `array: NAME`" if kind != "npy" else "remove `columns`")
    if array is not None and kind != "npz" and kind != "safetensors":
        raise _error(path, f"`array` names an array of a .npz/.safetensors file, not of a "
                     f".{kind} file", hint="use `columns:` for csv" if kind == "csv" else
                     "remove `array`")
    in_file_context = context if context_path is None else None
    if kind == "csv":
        x_raw, ctx_raw, cols, ctx_cols = read_csv(path, _names(columns),
                                                  _names(in_file_context))
        ctx_cols = ctx_cols or None
    elif kind == "npy":
        if in_file_context is not None:
            raise _error(path, "a .npy file holds one array, so it has no context inside",
                         hint="put the context in `context_path: FILE`, or use a .npz with "
                              "arrays x and context")
        x_raw = _load_npy(path)
    else:
        if isinstance(in_file_context, list):
            raise _error(path, f"`context` names one array of a .{kind} file, not a list",
                         hint="e.g. context: theta")
        arrays = _Arrays(path, kind)
        try:
            exclude = [in_file_context] if in_file_context else []
            x_array = arrays.choose(array, exclude, "data")
            if in_file_context == x_array:
                raise _error(path, f"array '{x_array}' cannot be both data and context")
            x_raw = arrays.get(x_array)
            if in_file_context is not None:
                ctx_array = in_file_context
                ctx_raw = arrays.get(ctx_array)
        finally:
            arrays.close()
    if context_path is not None:
        ctx_raw, ctx_cols, ctx_array = _context_from_file(context_path, context)
    x_what = f"array '{x_array}'" if x_array else "the data"
    x = to_float32(x_raw, x_what, path)
    if x.dim() < 2:
        shape = list(x.shape)
        raise _error(path, f"{x_what} has shape {shape}: expected one row per example, "
                     "[N, D] (or [N, C, H, W])",
                     hint=f"for {shape[0] if shape else 1} examples of one feature, save "
                          "x.reshape(-1, 1)")
    if x.shape[0] == 0:
        raise _error(path, f"{x_what} has no rows (empty)")
    ctx = None
    if ctx_raw is not None:
        where = context_path or path
        ctx_what = f"context array '{ctx_array}'" if ctx_array else "the context"
        ctx = to_float32(ctx_raw, ctx_what, where)
        if ctx.dim() == 0:
            raise _error(where, f"{ctx_what} is a single number; expected one row per example")
        if ctx.dim() == 1:
            ctx = ctx[:, None]
        if ctx.shape[0] != x.shape[0]:
            raise _error(where, f"{ctx_what} has {ctx.shape[0]} rows but the data has "
                         f"{x.shape[0]}", hint="one context row per data row, in the same "
                                               "order")
    return Table(x, ctx, cols, ctx_cols, x_array, ctx_array)


def _check_not_constant(path: Path, table: Table) -> None:
    """A constant feature has no density (the NLL would fall without bound)."""
    if table.x.dim() != 2 or table.x.shape[0] < 2:
        return
    same = (table.x.amax(0) == table.x.amin(0)).nonzero().flatten().tolist()
    if same:
        names = [table.columns[i] if table.columns else str(i) for i in same]
        label = "column" if table.columns else "feature (0-based)"
        raise _error(path, f"{label} {', '.join(names)} has the same value in every row: there "
                     "is no density to fit in that dimension",
                     hint="leave it out (`columns:`), or use it as context")


# -- the dataset ----------------------------------------------------------------------------
_FILE_PARAMS = dict(
    path={"type": "string", "description": "the data file: .csv/.tsv (header row), .npy, "
          ".npz or .safetensors; relative paths: the data dir, then the spec's directory"},
    columns={**_NAMES, "default": None,
             "description": "csv: the data columns, in order (default: all but the context)"},
    array={"type": ["string", "null"], "default": None,
           "description": "npz/safetensors: the data array (default: 'x', or the only array)"},
    context={**_NAMES, "default": None,
             "description": "the condition c of p(x | c): csv column(s), or an array name of "
                            "npz/safetensors (in context_path when that is given)"},
    context_path={"type": ["string", "null"], "default": None,
                  "description": "a separate file holding the context, row for row"},
    test_path={"type": ["string", "null"], "default": None,
               "description": "a separate test file (same columns/arrays) instead of "
                              "test_fraction"},
    test_fraction={"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                   "default": None,
                   "description": f"share of rows held out as test, seeded (default "
                                  f"{DEFAULT_TEST_FRACTION} unless test_path is given)"},
    seed={"type": "integer", "default": 0,
          "description": "seed of the train/test permutation"},
    sha256={"type": ["string", "null"], "default": None,
            "description": "expected sha256 of `path` (runs pin it: a changed file is "
                           "refused)"},
)


@DATASETS.register(
    "file",
    schema=params_schema(required=("path",), **_FILE_PARAMS),
    category="file",
    examples=[{"params": {"path": "table.csv", "columns": ["x1", "x2"]}},
              {"params": {"path": "simulator.npz", "array": "x", "context": "theta"}}],
)
class FileSource(DataSource):
    """Your own continuous data from a file (csv, npy, npz, safetensors), with an optional
    context for conditional flows; train/test split seeded or from a second file."""

    discrete = False

    def __init__(self, data_dir: Path | None = None, *, path: str,
                 columns: str | list[str] | None = None, array: str | None = None,
                 context: str | list[str] | None = None, context_path: str | None = None,
                 test_path: str | None = None, test_fraction: float | None = None,
                 seed: int = 0, sha256: str | None = None):
        super().__init__(data_dir)
        if test_path is not None and test_fraction is not None:
            raise DataError("data.dataset.file: give test_fraction or test_path, not both",
                            hint="test_path: a separate test file; test_fraction: a seeded "
                                 "share of path's rows")
        if test_path is not None and context_path is not None:
            raise DataError("data.dataset.file: context_path cannot be combined with "
                            "test_path (which file's context would the test rows get?)",
                            hint="put the context inside both files (csv columns or an "
                                 "npz/safetensors array named by `context`)")
        self.settings = {"path": path, "columns": columns, "array": array,
                         "context": context, "context_path": context_path,
                         "test_path": test_path, "test_fraction": test_fraction,
                         "seed": seed, "sha256": sha256}
        self.test_fraction = (DEFAULT_TEST_FRACTION if test_fraction is None and test_path
                              is None else test_fraction)
        self.seed = int(seed)
        self._splits: dict[str, DataSplit] | None = None
        #: role (path, test_path, context_path) -> (resolved file, how it was found)
        self.files: dict[str, tuple[Path, str]] = {}
        self.digests: dict[str, str] = {}
        self.table: Table | None = None

    # Reading is deferred to the first question that needs the data (shape, load).
    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self._load_all()["train"].x.shape[1:])

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        ctx = self._load_all()["train"].context
        return tuple(ctx.shape[1:]) if ctx is not None else None

    def _resolve(self, role: str) -> Path | None:
        value = self.settings[role]
        if value is None:
            return None
        if role not in self.files:
            self.files[role] = resolve_data_path(value, self.data_dir, self.spec_dir,
                                                 f"data.dataset.file.{role}")
        return self.files[role][0]

    def _read(self, path: Path, context_path: Path | None) -> Table:
        s = self.settings
        return read_table(path, columns=s["columns"], array=s["array"], context=s["context"],
                          context_path=context_path)

    def _load_all(self) -> dict[str, DataSplit]:
        if self._splits is not None:
            return self._splits
        main = self._resolve("path")
        assert main is not None
        digest = file_digest(main)
        self.digests["path"] = digest
        expected = self.settings["sha256"]
        if expected and digest != expected.lower():
            raise _error(main, f"the file changed since it was recorded (sha256 {digest[:12]}… "
                         f"!= {expected[:12]}…)",
                         hint="restore the file this run was trained on; to use the new "
                              "contents on purpose, set data.dataset.file.sha256: null")
        ctx_path = self._resolve("context_path")
        if ctx_path is not None:
            self.digests["context_path"] = file_digest(ctx_path)
        table = self._read(main, ctx_path)
        _check_not_constant(main, table)
        self.table = table
        test_path = self._resolve("test_path")
        if test_path is not None:
            self.digests["test_path"] = file_digest(test_path)
            test = self._read(test_path, None)
            self._check_same(main, table, test_path, test)
            train = DataSplit(x=table.x, context=table.context)
            test_split = DataSplit(x=test.x, context=test.context)
        else:
            n = table.x.shape[0]
            train_idx, test_idx = carve_indices(n, float(self.test_fraction), self.seed)
            if len(test_idx) == 0 or len(train_idx) == 0:
                raise _error(main, f"{n} row(s) cannot be split into train and test "
                             f"(test_fraction {self.test_fraction})",
                             hint="add rows, or give a separate test_path")
            full = DataSplit(x=table.x, context=table.context)
            train, test_split = take(full, train_idx), take(full, test_idx)
        self._splits = {"train": train, "test": test_split}
        return self._splits

    @staticmethod
    def _check_same(path: Path, a: Table, test_path: Path, b: Table) -> None:
        if tuple(a.x.shape[1:]) != tuple(b.x.shape[1:]):
            raise _error(test_path, f"test examples have shape {list(b.x.shape[1:])}, the "
                         f"training file's {list(a.x.shape[1:])} ({path})",
                         hint="both files need the same columns/arrays")
        if (a.context is None) != (b.context is None) or (
                a.context is not None and a.context.shape[1:] != b.context.shape[1:]):
            raise _error(test_path, "the test file's context does not match the training "
                         f"file's ({path})", hint="both files need the same context columns")

    def load(self, split: str) -> DataSplit:
        self.check_split(split)
        return self._load_all()[split]

    # -- what was read, for messages, run.json and the stored spec -------------------------
    @property
    def shape_hint(self) -> str:
        t = self.table
        if t is not None and t.columns:
            return (f"the file gives {len(t.columns)} data column(s) ({', '.join(t.columns)}): "
                    f"set model.input: [{len(t.columns)}], or choose columns with "
                    "data.dataset.file.columns")
        return "set model.input to the per-example shape of the file's array"

    def feature_names(self) -> tuple[list[str] | None, list[str] | None]:
        """Column names of the data and of the context, where the file has them."""
        t = self.table
        return (t.columns, t.context_columns) if t is not None else (None, None)

    def record(self) -> dict[str, Any]:
        """Provenance for ``run.json``: resolved files, their sha256, names and the split."""
        self._load_all()
        t = self.table
        assert t is not None
        out: dict[str, Any] = {
            "files": {role: {"path": str(p.resolve()), "sha256": self.digests.get(role)}
                      for role, (p, _) in self.files.items()},
            "rows": t.x.shape[0],
            "columns": t.columns, "array": t.array,
            "context": t.context_columns or t.context_array,
            "context_shape": list(t.context.shape[1:]) if t.context is not None else None,
        }
        if self.settings["test_path"] is None:
            out["test_split"] = {"fraction": self.test_fraction, "seed": self.seed}
        return out

    def pinned_params(self) -> dict[str, Any]:
        """The parameters with the paths as found, names as read and the file's sha256.

        Paths found in the data dir stay relative (portable, like MNIST's); paths found
        next to the spec become absolute, so the stored spec reads the same file from
        any working directory.
        """
        self._load_all()
        t = self.table
        assert t is not None
        out = dict(self.settings)
        for role, (p, where) in self.files.items():
            out[role] = str(p.resolve()) if where == "spec_dir" else self.settings[role]
        out["sha256"] = self.digests["path"]
        if t.columns:
            out["columns"] = list(t.columns)
        if t.array:
            out["array"] = t.array
        if t.context_columns:
            out["context"] = list(t.context_columns)
        elif t.context_array:
            out["context"] = t.context_array
        return out


def pin_spec(spec: Any, source: Any) -> Any:
    """``spec`` with its ``file`` dataset's parameters pinned (see
    :meth:`FileSource.pinned_params`); other specs are returned unchanged."""
    inner = getattr(source, "source", source)  # through WithValidation
    if not isinstance(inner, FileSource):
        return spec
    document = copy.deepcopy(spec.document)
    document["data"]["dataset"] = {"file": inner.pinned_params()}
    return dataclasses.replace(spec, document=document, data=document["data"])


# -- training on a file instead of the spec's dataset ---------------------------------------
#: parameters that describe the old file, not the new one: dropped by `--data`
_FILE_SPECIFIC = ("test_path", "context_path", "sha256")


def file_dataset_for(data: dict | None, path: str | Path, *, keep_selection: bool = True,
                     **params: Any) -> dict:
    """The ``data.dataset`` value that reads ``path`` (made absolute) in place of the
    spec's dataset.

    If the spec already reads a ``file``, its ``columns``, ``array``, ``context`` (unless
    ``keep_selection`` is False) and split settings are kept and ``path`` replaced;
    ``test_path``, ``context_path`` and ``sha256`` belonged to the old file and are
    dropped. ``params`` (those not None) are set explicitly.
    """
    dataset = (data or {}).get("dataset")
    keep: dict[str, Any] = {}
    if isinstance(dataset, dict) and "file" in dataset:
        drop = _FILE_SPECIFIC + (() if keep_selection else ("columns", "array", "context"))
        if params.get("test_path") is not None:
            drop += ("test_fraction",)
        keep = {k: v for k, v in (dataset["file"] or {}).items()
                if k not in drop and v is not None}
    keep.update({k: v for k, v in params.items() if v is not None})
    keep["path"] = str(Path(path).expanduser().resolve())
    return {"file": keep}


def with_override(overrides: list[str] | dict | None, path: str, value: Any
                  ) -> list[str] | dict:
    """``path = value`` followed by ``overrides`` (``--set`` strings or a dict), so the
    user's own ``--set data.dataset.file.X=...`` applies on top of it."""
    if isinstance(overrides, dict):
        return {path: value, **overrides}
    import json

    return [f"{path}={json.dumps(value)}", *(overrides or [])]


def load_spec_on_file(source: Any, path: str | Path, overrides: list[str] | dict | None = None,
                      *, quick: bool = False, keep_selection: bool = True,
                      **params: Any) -> Any:
    """Load a spec (path, YAML text or dict) with its dataset replaced by the file ``path``
    (see :func:`file_dataset_for`; the kept parameters are the spec's own), then the
    ``overrides``."""
    from flowspec.errors import SpecError
    from flowspec.spec import load_spec

    try:
        data = load_spec(source, quick=quick).data
    except SpecError:  # the spec needs the overrides to load: keep nothing, report below
        data = None
    dataset = file_dataset_for(data, path, keep_selection=keep_selection, **params)
    return load_spec(source, with_override(overrides, "data.dataset", dataset), quick=quick)
