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

Files are read and checked by :mod:`flowspec.data.tables` (problems at
``file:line`` and column). What is read and how it was split is recorded in the
run's ``run.json`` (:meth:`FileSource.record`); when a run starts, the stored spec
pins the resolved path, the column/array names and the file's sha256
(:func:`pin_spec`), so ``flowspec eval RUN`` later reads the same data from any
directory -- or refuses, if the file changed. :func:`load_spec_on_file` is
``flowspec train SPEC --data FILE``.

A ``.npy``/``.safetensors`` table larger than 1 GiB (or ``stream: true``) is not
loaded: its rows are read on demand, checked in one cached pass, and trained on in
a shard-wise order (:mod:`flowspec.data.streamed_table`).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from flowspec.data.base import DATASETS, DataSource, DataSplit
from flowspec.data.cache import cached_digest
from flowspec.data.columns import SUPPORT_SCHEMA, check_in_support
from flowspec.data.selection import check_selection
from flowspec.data.splits import split_off
from flowspec.data.streamed_table import read_streamed, streams
from flowspec.data.tables import (
    SUFFIXES,
    Table,
    check_not_constant,
    data_error,
    file_digest,
    read_table,
    select_features,
)
from flowspec.errors import DataError
from flowspec.registry import params_schema

__all__ = ["SUFFIXES", "FileSource", "file_dataset_for", "load_spec_on_file", "pin_spec",
           "read_table", "resolve_data_path"]

#: when neither test_fraction nor test_path is given
DEFAULT_TEST_FRACTION = 0.2
_NAMES = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                         "minItems": 1}, {"type": "null"}]}


def resolve_data_path(value: str, data_dir: Path | None, spec_dir: Path | None,
                      what: str = "path") -> tuple[Path, str]:
    """``(path, where)`` with ``where`` in ``absolute | data_dir | spec_dir``.

    A relative path is looked up in the data dir (``--data-dir``, ``$FLOWSPEC_DATA``,
    ``./data``) first, then in the directory of the spec file.
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        if not p.is_file():
            raise data_error(p, f"{what}: no such file" if not p.exists() else
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
    raise data_error(value, f"{what}: no such file (looked for {' and '.join(tried)})",
                     hint="relative paths are looked up in the data dir (--data-dir, "
                          "$FLOWSPEC_DATA, ./data), then next to the spec; or give an absolute "
                          "path, or `flowspec train SPEC --data FILE`")


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
    features={"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 0},
                         "minItems": 1}, {"type": "null"}], "default": None,
              "description": "npy/npz/safetensors: the feature indices (0-based, last axis of "
                             "an [N, D] array) to keep, in order (csv: `columns`)"},
    drop={"anyOf": [{"type": "array", "items": {"type": ["integer", "string"]},
                     "minItems": 1}, {"type": "null"}], "default": None,
          "description": "features to leave out: indices of an array's features, or csv "
                         "column names"},
    images={"type": ["boolean", "null"], "default": None,
            "description": "the array holds images [N, C, H, W]: dequantized, bits/dim, drawn "
                           "as image grids (default: yes for uint8 arrays of rank 4; true also "
                           "takes integers 0..255 or floats in [0, 1]; false: a table)"},
    support=SUPPORT_SCHEMA,
    seed={"type": "integer", "default": 0,
          "description": "seed of the train/test permutation"},
    stream={"type": ["boolean", "null"], "default": None,
            "description": ".npy/.safetensors tables: read rows on demand (memory-mapped / "
                           "sliced) instead of loading the array, checked in one cached pass; "
                           "null: when the array is larger than 1 GiB"},
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

    def __init__(self, data_dir: Path | None = None, *, path: str,
                 columns: str | list[str] | None = None, array: str | None = None,
                 context: str | list[str] | None = None, context_path: str | None = None,
                 test_path: str | None = None, test_fraction: float | None = None,
                 features: list[int] | None = None, drop: list[int | str] | None = None,
                 images: bool | None = None, support: dict | None = None, seed: int = 0,
                 stream: bool | None = None, sha256: str | None = None):
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
                         "features": features, "drop": drop, "images": images,
                         "support": support, "seed": seed, "stream": stream,
                         "sha256": sha256}
        self.test_fraction = (DEFAULT_TEST_FRACTION if test_fraction is None and test_path
                              is None else test_fraction)
        self.seed = int(seed)
        self._splits: dict[str, DataSplit] | None = None
        #: role (path, test_path, context_path) -> (resolved file, how it was found)
        self.files: dict[str, tuple[Path, str]] = {}
        self.digests: dict[str, str] = {}
        self.table: Table | None = None
        #: file -> read on demand (decided once per file)
        self._streamed: dict[Path, bool] = {}

    # Reading is deferred to the first question that needs the data (shape, load).
    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self._load_all()["train"].x.shape[1:])

    @property
    def discrete(self) -> bool:  # type: ignore[override]
        """8-bit images (uint8 [N, C, H, W], or declared `images: true`): the image pipeline."""
        self._load_all()
        return bool(self.table is not None and self.table.images)

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

    def _streams(self, path: Path) -> bool:
        """Whether ``path`` is read on demand (:mod:`flowspec.data.streamed_table`)."""
        if path not in self._streamed:
            try:
                self._streamed[path] = streams(path, self.settings)
            except DataError:
                if self.settings.get("stream"):
                    raise
                self._streamed[path] = False  # the reader below says what is wrong
        return self._streamed[path]

    def _digest(self, path: Path) -> str:
        """sha256 of the file; a streamed one's is read once per file (data/cache.py)."""
        return cached_digest(path) if self._streams(path) else file_digest(path)

    def _read(self, path: Path, context_path: Path | None) -> Table:
        s = self.settings
        if self._streams(path):
            table = read_streamed(path, s, context_path)
        else:
            table = read_table(path, columns=s["columns"], array=s["array"],
                               context=s["context"], context_path=context_path,
                               images=s["images"])
        return select_features(path, table, s["features"], s["drop"])

    def _load_all(self) -> dict[str, DataSplit]:
        if self._splits is not None:
            return self._splits
        main = self._resolve("path")
        assert main is not None
        digest = self._digest(main)
        self.digests["path"] = digest
        expected = self.settings["sha256"]
        if expected and digest != expected.lower():
            raise data_error(main, f"the file changed since it was recorded (sha256 {digest[:12]}… "
                             f"!= {expected[:12]}…)",
                             hint="restore the file this run was trained on (its run.json "
                                  "names it), or train again on the new contents; a spec "
                                  "of your own accepts any contents with "
                                  "data.dataset.file.sha256: null")
        ctx_path = self._resolve("context_path")
        if ctx_path is not None:
            self.digests["context_path"] = file_digest(ctx_path)
        check_selection(main, self.settings, self.model_shapes)
        table = self._read(main, ctx_path)
        check_not_constant(main, table)
        self.table = table
        test_path = self._resolve("test_path")
        if test_path is not None:
            self.digests["test_path"] = self._digest(test_path)
            test = self._read(test_path, None)
            self._check_same(main, table, test_path, test)
            train = DataSplit(x=table.x, context=table.context)
            test_split = DataSplit(x=test.x, context=test.context)
        else:
            n = table.x.shape[0]
            full = DataSplit(x=table.x, context=table.context)
            train, test_split = split_off(full, float(self.test_fraction), self.seed)
            if len(test_split) == 0 or len(train) == 0:
                raise data_error(main, f"{n} row(s) cannot be split into train and test "
                                 f"(test_fraction {self.test_fraction})",
                                 hint="add rows, or give a separate test_path")
        if self.settings["support"]:
            for split, part in (("train", train), ("test", test_split)):
                try:
                    check_in_support(main, part.x, table.columns, self.settings["support"], split)
                except ValueError as err:
                    raise data_error(main, f"data.dataset.file.support: {err}") from None
        self._splits = {"train": train, "test": test_split}
        return self._splits

    @staticmethod
    def _check_same(path: Path, a: Table, test_path: Path, b: Table) -> None:
        if tuple(a.x.shape[1:]) != tuple(b.x.shape[1:]):
            raise data_error(test_path, f"test examples have shape {list(b.x.shape[1:])}, the "
                             f"training file's {list(a.x.shape[1:])} ({path})",
                             hint="both files need the same columns/arrays")
        if a.images != b.images:
            raise data_error(test_path, "the test file's data are "
                             f"{'images' if b.images else 'not images'}, the training file's "
                             f"{'are' if a.images else 'are not'} ({path})",
                             hint="save both as uint8 [N, C, H, W] (or declare `images:`)")
        if (a.context is None) != (b.context is None) or (
                a.context is not None and a.context.shape[1:] != b.context.shape[1:]):
            raise data_error(test_path, "the test file's context does not match the training "
                             f"file's ({path})", hint="both files need the same context columns")

    def load(self, split: str) -> DataSplit:
        self.check_split(split)
        return self._load_all()[split]

    # -- what was read, for messages, run.json and the stored spec -------------------------
    @property
    def shape_hint(self) -> str:
        t = self.table
        names = getattr(self, "input_vars", None) or []
        if t is not None and t.columns:
            d = len(t.columns)
            fix = (f"--set vars.{names[0]}={d} (this spec's model.input is [${{{names[0]}}}])"
                   if len(names) == 1 and names[0] else f"set model.input: [{d}]")
            return (f"the file gives {d} data column(s) ({', '.join(t.columns)}): {fix}, or "
                    "choose columns with data.dataset.file.columns")
        if t is not None and len(names) == t.x.dim() - 1 and all(names):
            sets = " ".join(f"--set vars.{n}={v}" for n, v in zip(names, t.x.shape[1:]))
            return f"the file's examples have shape {list(t.x.shape[1:])}: {sets}"
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
        if any(self._streamed.values()):
            out["streamed"] = True
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
            out["drop"] = None  # the kept columns say it
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
