"""The per-row checks of a streamed file, in one pass over chunks, cached per file.

An in-memory table is checked with whole-tensor operations (:mod:`flowspec.data.tables`,
:mod:`flowspec.data.columns`). A streamed one (:mod:`flowspec.data.lazy`) gets the
same checks from one pass over its rows in chunks of ~16 MiB: the first non-finite
value (at its file row), per-feature minimum and maximum (constant columns, lattice
offsets) and, with a declared support, the first value outside it. The result is a
:class:`RowStats`, cached by the file's fingerprint and the rows' index
(:mod:`flowspec.data.cache`), so a resumed run, an evaluation or the next run on the
same file does not read the file again. The checks then raise exactly the errors the
in-memory path raises, with the same row numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from flowspec.data.cache import cached, fingerprint
from flowspec.data.lazy import CHUNK_BYTES, LazyRows

#: passes actually run in this process (a cache hit runs none)
PASSES = {"count": 0}


@dataclass
class RowStats:
    """What one pass found over some rows of a file."""

    rows: int
    #: per feature of ``[N, D]`` rows: minimum, maximum, the first row's value
    low: list[float]
    high: list[float]
    first: list[float]
    #: the first NaN/inf (or beyond float32) value of the file: (index, value)
    bad: tuple[list[int], float] | None = None
    #: the first value outside the declared support: (feature, row, value, count)
    outside: tuple[int, int, float, int] | None = None


def row_stats(rows: LazyRows, support: tuple[list, list] | None = None) -> RowStats:
    """The :class:`RowStats` of ``rows`` (cached; see the module doc).

    The pass reads every feature of the file's rows (``rows.cols`` are picked from
    its result, so a feature selection does not pay a pass of its own). Over a whole
    file it also finds the first non-finite value, read in the file's own dtype (so
    float64 values beyond float32 are seen as such). ``support``: per selected
    feature, open bounds ``(low, high)`` (None: unbounded)."""
    reader = rows.reader
    width = reader.shape[1] if len(reader.shape) == 2 else 0
    cols = rows.cols if rows.cols is not None else list(range(width))
    full = None
    if support is not None:
        full = ([None] * width, [None] * width)
        for j, c in enumerate(cols):
            full[0][c], full[1][c] = support[0][j], support[1][j]
    key = json.dumps([fingerprint(reader.path), getattr(reader, "name", None),
                      LazyRows(reader, rows.index, None, rows.holes).digest_key(), full])
    value = cached("rows", hashlib.sha256(key.encode()).hexdigest()[:32],
                   lambda: asdict(_pass(LazyRows(reader, rows.index, None, rows.holes), full)))
    stats = RowStats(**value)
    if rows.cols is None or not width:
        return stats
    outside = None
    if stats.outside is not None:
        j, row, v, count = stats.outside
        outside = (cols.index(j), row, v, count)
    return RowStats(stats.rows, [stats.low[c] for c in cols], [stats.high[c] for c in cols],
                    [stats.first[c] for c in cols] if stats.first else [], stats.bad, outside)


def _pass(rows: LazyRows, support: tuple[list, list] | None) -> RowStats:
    from flowspec.data.tables import first_bad

    PASSES["count"] += 1
    flat = rows.reader.shape and len(rows.reader.shape) == 2
    width = rows.shape[1] if flat else 0
    low = np.full(width, np.inf)
    high = np.full(width, -np.inf)
    first: list[float] = []
    bad = None
    counts = np.zeros(width, dtype=np.int64)
    firsts: list[tuple[int, float] | None] = [None] * width
    reader = rows.reader
    for start, chunk in _chunks(rows):
        if bad is None and chunk.dtype.kind == "f":
            finite = np.isfinite(chunk)
            wide = chunk.dtype.itemsize > 4 and chunk.size and float(
                np.abs(np.where(finite, chunk, 0)).max()) > np.finfo(np.float32).max
            if not finite.all() or wide:
                idx, v = first_bad(chunk)
                bad = ([idx[0] + start, *idx[1:]], v)
        if not flat or chunk.shape[0] == 0:
            continue
        x = np.asarray(chunk, dtype=np.float32)
        if start == 0:
            first = [float(v) for v in x[0]]
        with np.errstate(invalid="ignore"):
            low = np.fmin(low, x.min(0))
            high = np.fmax(high, x.max(0))
        if support is not None:
            xd = x.astype(np.float64)
            for j, (lo, hi) in enumerate(zip(*support)):
                if lo is None and hi is None:
                    continue
                out = np.zeros(len(xd), dtype=bool)
                if lo is not None:
                    out |= xd[:, j] <= lo
                if hi is not None:
                    out |= xd[:, j] >= hi
                n_out = int(out.sum())
                if n_out:
                    if firsts[j] is None:
                        i = int(np.flatnonzero(out)[0])
                        firsts[j] = (start + i, float(xd[i, j]))
                    counts[j] += n_out
    reader.release()
    outside = None
    for j in range(width):
        if counts[j]:
            row, v = firsts[j]  # type: ignore[misc]
            outside = (j, row, v, int(counts[j]))
            break
    return RowStats(len(rows), low.tolist(), high.tolist(), first, bad, outside)


def _chunks(rows: LazyRows):
    """Chunks of ~16 MiB: a whole file's in its own dtype, an index's rows as float32."""
    if rows.index is None and rows.holes is None:
        size = max(1, CHUNK_BYTES // max(1, rows.reader.row_bytes))
        for start in range(0, len(rows), size):
            yield start, rows.reader.read_raw(start, min(len(rows), start + size))
        return
    for start, chunk in rows.chunks():
        yield start, chunk.numpy()
