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
    same = (x.amax(0) == x.amin(0)).nonzero().flatten().tolist()
    if not same:
        return
    label = [names[i] for i in same] if names else [str(i) for i in same]
    what = "column" if names else "feature (0-based index)"
    value = float(x[0, same[0]])
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
