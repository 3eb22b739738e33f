"""Rows of an array file read on demand: ``.npy`` memory-mapped, ``.safetensors`` sliced.

A file larger than memory is never loaded whole. :class:`LazyRows` stands where a
split's tensor stands (``split.x[a:b]``, ``split.x[idx]``, ``len``, ``shape``) and
reads only the rows asked for, as float32 tensors. A split of it (test_fraction,
val_fraction) is a sorted index of file rows (:meth:`LazyRows.take_rows`), never a copy
of the data. Reads gather their rows in file order (sorted, then put back in the
order asked), so a batch touches each disk page once and front to back.

Mapped pages count in the process's resident memory until they are unmapped, so
the ``.npy`` reader unmaps the rows it has just read (``madvise(MADV_DONTNEED)``: a
fault maps its neighbours too), and readers drop their whole mapping every
:data:`RELEASE_BYTES` of pages read (:meth:`ArrayReader.release`): the page cache
keeps the pages, the process does not.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: arrays larger than this (bytes) stream when ``stream`` is left to decide
STREAM_BYTES = 1 << 30
#: a reader unmaps its file after reading about this many bytes (bounds resident memory)
RELEASE_BYTES = 32 << 20
#: rows per read of a streamed pass (chunks of about this many bytes)
CHUNK_BYTES = 16 << 20
PAGE = mmap.PAGESIZE

_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}


class ArrayReader:
    """One array of one file: ``shape``, ``dtype`` (a name), ``read(start, stop)`` of rows."""

    path: Path
    shape: tuple[int, ...]
    dtype: str

    def __init__(self) -> None:
        self._since_release = 0

    @property
    def row_bytes(self) -> int:
        item = 2 if self.dtype in ("bfloat16", "float16") else np.dtype(self.dtype).itemsize
        return item * int(np.prod(self.shape[1:], dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a float32 tensor."""
        out = self._read(start, stop)
        self._count((stop - start) * self.row_bytes)
        return out

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """Rows ``rows`` (sorted, ascending) as a float32 tensor."""
        out = self._gather(rows)
        # every row maps its whole page in: count the pages touched, not the rows' bytes
        first = rows.astype(np.int64) * self.row_bytes // PAGE
        last = (rows.astype(np.int64) + 1) * self.row_bytes // PAGE
        self._count(PAGE * int(len(np.unique(first)) + (last != first).sum()))
        return out

    def _count(self, nbytes: int) -> None:
        self._since_release += nbytes
        if self._since_release >= RELEASE_BYTES:
            self.release()

    def release(self) -> None:
        """Unmap the file (the next read maps it again): resident memory stays bounded."""
        self._since_release = 0

    def read_raw(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in the file's own dtype (wide floats as float64), for checks."""
        out = self._raw(start, stop)
        self._count((stop - start) * self.row_bytes)
        return out

    def _raw(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def _read(self, start: int, stop: int) -> torch.Tensor:
        raise NotImplementedError

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __getstate__(self) -> dict:  # DataLoader workers open their own mapping
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


class NpyReader(ArrayReader):
    """A ``.npy`` file through ``np.load(mmap_mode='r')``."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self._handle: Any = None
        a = self._array()
        self.shape, self.dtype = tuple(int(s) for s in a.shape), str(a.dtype)
        self.fortran = bool(a.flags.f_contiguous and a.ndim > 1 and not a.flags.c_contiguous)

    def _array(self) -> np.ndarray:
        if self._handle is None:
            self._handle = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._handle

    def _raw(self, start: int, stop: int) -> np.ndarray:
        out = np.array(self._array()[start:stop])
        self._drop(start, stop)
        return out

    def _read(self, start: int, stop: int) -> torch.Tensor:
        out = torch.from_numpy(np.array(self._array()[start:stop], dtype=np.float32))
        self._drop(start, stop)
        return out

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(np.array(self._array()[rows], dtype=np.float32))
        if len(rows):
            self._drop(int(rows[0]), int(rows[-1]) + 1)
        return out

    def _drop(self, start: int, stop: int) -> None:
        """Unmap rows ``start:stop`` from this process right after reading them: a fault
        maps its neighbours too (fault-around, large folios), so one scattered batch can
        map hundreds of MiB that would count as resident until unmapped."""
        a = self._handle
        mm = getattr(a, "_mmap", None)
        if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise") or self.fortran:
            return
        base = int(a.offset) % mmap.ALLOCATIONGRANULARITY  # where the array starts in mm
        lo = (base + start * self.row_bytes) // PAGE * PAGE
        hi = min(len(mm), base + stop * self.row_bytes + PAGE)
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, max(0, hi - lo))
        except (OSError, ValueError):
            pass

    def release(self) -> None:
        super().release()
        a, self._handle = self._handle, None
        mm = getattr(a, "_mmap", None)
        if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
            try:  # drop this process's pages now (the page cache keeps them)
                mm.madvise(mmap.MADV_DONTNEED)
            except OSError:
                pass


class SafetensorsReader(ArrayReader):
    """One tensor of a ``.safetensors`` file through ``safe_open(...).get_slice``."""

    def __init__(self, path: Path, name: str):
        super().__init__()
        self.path, self.name = Path(path), name
        self._handle: Any = None
        with open(self.path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        info = header[name]
        self.shape = tuple(int(s) for s in info["shape"])
        self.dtype = _ST_DTYPES.get(info["dtype"], info["dtype"].lower())

    def _slice(self) -> Any:
        if self._handle is None:
            from safetensors import safe_open

            fh = safe_open(str(self.path), framework="pt")
            self._handle = (fh, fh.get_slice(self.name))
        return self._handle[1]

    def _raw(self, start: int, stop: int) -> np.ndarray:
        t = self._slice()[start:stop]
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.to(torch.float32)
        return t.numpy()

    def _read(self, start: int, stop: int) -> torch.Tensor:
        return self._slice()[start:stop].to(torch.float32).contiguous()

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        # contiguous runs of rows, each one slice read
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]))
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        sl = self._slice()
        parts = [sl[int(r[0]):int(r[-1]) + 1] for r in np.split(rows, cuts)]
        return torch.cat(parts).to(torch.float32)

    def release(self) -> None:
        super().release()
        self._handle = None  # safe_open unmaps when the handle goes


class TensorLikeSize:
    """``numel`` and ``size`` of a row view from its ``shape``: what code written for
    tensors asks of the rows (sizes, memory estimates) without reading them."""

    shape: torch.Size

    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]


class LazyRows(TensorLikeSize):
    """Rows of an :class:`ArrayReader` (all, or a sorted index of them), read on access.

    Indexing gives float32 tensors: ``rows[a:b]``, ``rows[idx]`` (any order),
    ``rows[i]``. ``cols`` keeps only those features of ``[N, D]`` rows. ``sampling``
    tells the trainer how to draw batches (``windows``: shard-wise, see
    :mod:`flowspec.data.shards`)."""

    sampling = "windows"
    dtype = torch.float32
    device = torch.device("cpu")
    is_lazy = True

    def __init__(self, reader: ArrayReader, index: np.ndarray | None = None,
                 cols: list[int] | None = None, holes: np.ndarray | None = None):
        assert index is None or holes is None
        self.reader, self.index, self.cols, self.holes = reader, index, cols, holes
        # row of rank r = r + (holes at or before it): searchsorted in holes - arange
        self._adjusted = (None if holes is None else
                          holes - np.arange(len(holes), dtype=holes.dtype))

    # -- what a tensor would say ---------------------------------------------------------
    def __len__(self) -> int:
        if self.index is not None:
            return int(len(self.index))
        return int(self.reader.shape[0] - (0 if self.holes is None else len(self.holes)))

    @property
    def shape(self) -> torch.Size:
        rest = list(self.reader.shape[1:]) or [1]  # a 1-D array: one feature per row
        if self.cols is not None:
            rest[0] = len(self.cols)
        return torch.Size([len(self), *rest])

    def dim(self) -> int:
        return max(2, len(self.reader.shape))

    def element_size(self) -> int:
        return 4

    # -- reading -------------------------------------------------------------------------
    def file_rows(self, ranks: np.ndarray) -> np.ndarray:
        """The file rows of positions ``ranks`` of these rows."""
        if self.index is not None:
            return self.index[ranks]
        if self.holes is not None:
            adj = self._adjusted  # same dtype both sides, or numpy converts all of adj
            assert adj is not None
            return ranks + np.searchsorted(adj, ranks.astype(adj.dtype, copy=False),
                                           side="right")
        return ranks

    def _select(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 1:
            return t[:, None]
        return t if self.cols is None else t[:, self.cols].contiguous()

    def __getitem__(self, key: Any) -> torch.Tensor:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} of {n}")
            return self[np.array([i])][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self[np.arange(start, stop, step)]
            if self.index is None and self.holes is None:
                return self._select(self.reader.read(start, max(start, stop)))
            if self.index is not None:
                return self._select(self.reader.gather(self.index[start:stop]))
            return self._select(self.reader.gather(self.file_rows(np.arange(start, stop))))
        ranks = key.cpu().numpy() if torch.is_tensor(key) else np.asarray(key)
        if ranks.dtype == bool:
            ranks = np.flatnonzero(ranks)
        ranks = ranks.astype(np.int64, copy=False)
        ranks = np.where(ranks < 0, ranks + n, ranks)
        order = np.argsort(ranks, kind="stable")  # file rows grow with ranks: sorted too
        got = self.reader.gather(self.file_rows(ranks[order]))
        out = torch.empty_like(got)
        out[torch.from_numpy(order)] = got
        return self._select(out)

    def take_rows(self, ranks: torch.Tensor | np.ndarray) -> LazyRows:
        """The rows at positions ``ranks`` (sorted), still unread."""
        r = ranks.cpu().numpy() if torch.is_tensor(ranks) else np.asarray(ranks)
        return LazyRows(self.reader, _compact(self.file_rows(r)), self.cols)

    def without(self, ranks: torch.Tensor | np.ndarray) -> LazyRows:
        """All rows but those at positions ``ranks`` (sorted, few): kept as the excluded
        rows, so the training rest of a huge file costs no index of its own."""
        r = ranks.cpu().numpy() if torch.is_tensor(ranks) else np.asarray(ranks)
        if self.index is not None:
            keep = np.ones(len(self), dtype=bool)
            keep[r] = False
            return LazyRows(self.reader, self.index[keep], self.cols)
        gone = _compact(self.file_rows(r.astype(np.int64)))
        if self.holes is not None:  # disjoint from gone: one sort in place
            gone = np.concatenate([self.holes, gone.astype(self.holes.dtype)])
            gone.sort()
        return LazyRows(self.reader, None, self.cols, gone)

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first position, rows)`` over all rows in order, in chunks of ~CHUNK_BYTES."""
        size = rows or max(1, CHUNK_BYTES // max(1, self.reader.row_bytes))
        for start in range(0, len(self), size):
            yield start, self[start:start + size]

    def to(self, *args: Any, **kwargs: Any) -> LazyRows:
        return self  # stays on disk; batches move

    def digest_key(self) -> str:
        """What identifies these rows of the file (for caches): index and columns."""
        import hashlib

        h = hashlib.sha256()
        for name, part in (("index", self.index), ("holes", self.holes)):
            if part is not None:
                h.update(f"{name}:{part.dtype}".encode())
                h.update(memoryview(np.ascontiguousarray(part)))
        h.update(json.dumps(self.cols).encode())
        return h.hexdigest()[:24]

    def __repr__(self) -> str:
        return f"LazyRows({self.reader.path.name}, {list(self.shape)})"


def _compact(rows: np.ndarray) -> np.ndarray:
    """Row numbers in 4 bytes where they fit (the index of a huge split)."""
    if rows.dtype != np.int32 and (rows.size == 0 or int(rows.max()) < 2**31):
        return rows.astype(np.int32)
    return rows


def is_lazy(x: Any) -> bool:
    """True for rows read on demand (files streamed, image folders decoded per batch)."""
    return bool(getattr(x, "is_lazy", False))


def open_reader(path: Path, kind: str, name: str | None) -> ArrayReader:
    """The lazy reader of a ``.npy`` file or a ``.safetensors`` tensor."""
    if kind == "npy":
        return NpyReader(path)
    assert name is not None
    return SafetensorsReader(path, name)


def file_size(path: Path) -> int:
    return os.stat(path).st_size
