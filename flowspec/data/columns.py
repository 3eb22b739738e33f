"""What each column of a table is, checked on the training split before a density is fitted.

A continuous density fitted to a column that holds few distinct values (a category
coded as 1/2) or integers (counts) puts spikes on those values: its NLL falls
without bound and means nothing. Those columns are named loudly at the start of a
run, with what to do (``dequantize`` them, use them as context, or leave them out);
a column that is constant in the training split has no density at all and is an
error with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from flowspec.data.lazy import is_lazy
from flowspec.errors import DataError, Location, Problem

#: a column with at most this many distinct values is "few-valued"
FEW_VALUES = 20
#: columns are profiled on at most this many training rows (enough to see a lattice)
PROFILE_ROWS = 200_000


@dataclass
class ColumnProfile:
    """One column of the training split: its name, distinct values, lattice."""

    name: str
    distinct: int
    integer: bool
    values: list[float]  # the distinct values, when few

    @property
    def few(self) -> bool:
        return self.distinct <= FEW_VALUES

    @property
    def discrete(self) -> bool:
        return self.integer or self.few


def column_names(x: torch.Tensor, names: list[str] | None) -> list[str]:
    return list(names) if names else [f"feature {j}" for j in range(x.shape[1])]


def profile_columns(x: torch.Tensor, names: list[str] | None = None) -> list[ColumnProfile]:
    """A profile per column of a ``[N, D]`` table (the first PROFILE_ROWS rows)."""
    if x.dim() != 2:
        return []
    x = x[:PROFILE_ROWS].detach().cpu().double()
    out = []
    for j, name in enumerate(column_names(x, names)):
        col = x[:, j]
        uniq = torch.unique(col)
        out.append(ColumnProfile(name, int(uniq.numel()), bool((col == col.round()).all()),
                                 uniq.tolist() if uniq.numel() <= FEW_VALUES else []))
    return out


def check_train_constant(path: Path | str, x: torch.Tensor, names: list[str] | None,
                         split: str = "training split") -> None:
    """A feature that is constant (in the rows the density is fitted to) is an error."""
    if x.dim() != 2 or x.shape[0] < 2:
        return
    if is_lazy(x):  # one cached pass over the file (flowspec.data.row_checks)
        from flowspec.data.row_checks import row_stats

        stats = row_stats(x)
        same = [j for j, (lo, hi) in enumerate(zip(stats.low, stats.high)) if lo == hi]
        value = stats.first[same[0]] if same else 0.0
    else:
        same = (x.amax(0) == x.amin(0)).nonzero().flatten().tolist()
        value = float(x[0, same[0]]) if same else 0.0
    if not same:
        return
    label = [names[i] for i in same] if names else [str(i) for i in same]
    what = "column" if names else "feature (0-based index)"
    fix = ("leave it out (`columns:` lists the columns to keep)" if names else
           f"leave it out (`drop: [{', '.join(label)}]` removes features of an array)")
    raise DataError(Problem(
        f"{what} {', '.join(label)} has the same value ({value:g}) in every row of the "
        f"{split}: there is no density to fit in that dimension (the NLL would fall "
        "without bound)", loc=Location(str(path)),
        hint=f"{fix}, or use it as context"))


def discrete_warnings(profiles: list[ColumnProfile], dequantized: set[str]) -> list[str]:
    """One loud line per discrete column not dequantized: which, how many values, the fix."""
    lines = []
    for p in profiles:
        if not p.discrete or p.name in dequantized:
            continue
        shown = ", ".join(f"{v:g}" for v in p.values[:6]) + (" ..." if len(p.values) > 6 else "")
        if p.few:
            what = (f"column '{p.name}' takes only {p.distinct} distinct value(s) ({shown}): "
                    "a continuous density puts spikes on them, so its NLL falls without "
                    "meaning")
            fix = ("if it is a category, use it as context (`context: [...]`) or leave it "
                   "out; if it is a count or a rounded measurement, add `data.preprocess: "
                   "[dequantize]` (uniform noise over each bin; `bin_width:` or `levels:` "
                   "when the values are not one unit apart)")
        else:
            what = (f"column '{p.name}' holds only integers ({p.distinct} distinct values): "
                    "the NLL of a continuous density on a lattice is not a bound on anything")
            fix = ("add `data.preprocess: [dequantize]` (uniform noise over each unit bin) so "
                   "the NLL bounds -log P of the integers in nats")
        lines.append(f"{what}; {fix}")
    return lines


# -- declared supports ---------------------------------------------------------------------------
#: ``data.dataset.file.support``: ``{column: positive | negative | [low, high]}``
SUPPORT_SCHEMA = {
    "anyOf": [{"type": "object", "additionalProperties": {"anyOf": [
        {"enum": ["positive", "negative"]},
        {"type": "array", "items": {"type": ["number", "null"]}, "minItems": 2,
         "maxItems": 2}]}}, {"type": "null"}],
    "default": None,
    "description": "per column (name, or feature index of an array): positive, negative or "
                   "[low, high] (null: open); a `support` node maps it onto the real line "
                   "first in the flow, so samples never leave it"}


def support_bounds(support: dict, names: list[str] | None, width: int
                   ) -> tuple[list[float | None], list[float | None]]:
    """``{column: declaration}`` -> per-feature ``(low, high)`` lists (None: open).

    ``names``: the data columns in order (csv), or None for an array's features, which
    are keyed by index. Raises ValueError with the fix."""
    low: list[float | None] = [None] * width
    high: list[float | None] = [None] * width
    for key, value in support.items():
        if names is not None and str(key) in names:
            j = names.index(str(key))
        elif str(key).isdigit() and int(key) < width and names is None:
            j = int(key)
        elif names is None:
            raise ValueError(f"support names '{key}', but the data columns are not known "
                             "here: list them (`columns: [...]`), or key arrays' features by "
                             f"index (0 .. {width - 1})")
        else:
            raise ValueError(f"support names no data column '{key}' (columns: "
                             f"{', '.join(names)})")
        if value == "positive":
            low[j] = 0.0
        elif value == "negative":
            high[j] = 0.0
        else:
            lo, hi = value
            if lo is not None and hi is not None and not float(hi) > float(lo):
                raise ValueError(f"support of '{key}': high {hi} is not above low {lo}")
            low[j] = None if lo is None else float(lo)
            high[j] = None if hi is None else float(hi)
    return low, high


def check_in_support(path: Path | str, x: torch.Tensor, names: list[str] | None,
                     support: dict, split: str) -> None:
    """Every value strictly inside its declared support (on the boundary the log-density
    of the mapped feature is infinite): the first one outside, named."""
    low, high = support_bounds(support, names, x.shape[1])
    labels = column_names(x, names)
    found = _first_outside(x, low, high)
    if found is None:
        return
    j, i, value, count = found
    lo, hi = low[j], high[j]
    side = f"({'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'})"
    raise DataError(Problem(
        f"{labels[j]}: row {i} of the {split} split holds {value:g}, outside "
        f"its declared support {side} ({count} value(s) in all)",
        loc=Location(str(path)),
        hint="fix or drop those rows, or widen the support (the bounds are open: a value "
             "on a bound has infinite density after the map)"))


def _first_outside(x: torch.Tensor, low: list, high: list
                   ) -> tuple[int, int, float, int] | None:
    """(feature, row, value, count in that feature) of the first value outside its bounds."""
    if is_lazy(x):  # one cached pass over the file (flowspec.data.row_checks)
        from flowspec.data.row_checks import row_stats

        found = row_stats(x, (low, high)).outside
        return tuple(found) if found is not None else None  # type: ignore[return-value]
    for j, (lo, hi) in enumerate(zip(low, high)):
        col = x[:, j].double()
        bad = torch.zeros_like(col, dtype=torch.bool)
        if lo is not None:
            bad |= col <= lo
        if hi is not None:
            bad |= col >= hi
        if bad.any():
            i = int(bad.nonzero()[0])
            return j, i, float(col[i]), int(bad.sum())
    return None
