"""``dequantize`` for tables: which columns, what bin width, and what the NLL then means.

Run once when a table's preprocessing is built, on the training split (validation
and test rows never choose a setting): a train-constant column is refused, discrete
columns that stay continuous are warned about, and the dequantized ones are said
aloud with the units of the bound (:mod:`flowspec.data.preprocess`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowspec.data.columns import (
    ColumnProfile,
    check_train_constant,
    discrete_warnings,
    profile_columns,
)
from flowspec.data.lazy import is_lazy
from flowspec.errors import DataError


def _where(source: Any) -> str:
    files = getattr(source, "files", None) or {}
    return str(files["path"][0]) if "path" in files else "data"


def _chosen(cfg: Any, profiles: list[ColumnProfile], names: list[str], path: str
            ) -> list[int]:
    if cfg.deq_columns is None:
        idx = [j for j, p in enumerate(profiles) if p.discrete]
        if not idx:
            raise DataError(f"{path}: dequantize found no integer-valued or few-valued column "
                            "in the training split", hint="name the columns to dequantize "
                            "(`dequantize: {columns: [...], bin_width: ...}`), or remove it")
        return idx
    idx = []
    for c in cfg.deq_columns:
        if isinstance(c, int):
            if not 0 <= c < len(names):
                raise DataError(f"{path}: dequantize column {c} is out of range (the data has "
                                f"{len(names)} features, 0-based)")
            idx.append(c)
        elif c in names:
            idx.append(names.index(c))
        else:
            raise DataError(f"{path}: dequantize names no column '{c}'",
                            hint=f"columns: {', '.join(names)}")
    return idx


def _width(j: int, p: ColumnProfile, cfg: Any, x: torch.Tensor, path: str) -> float:
    levels = (cfg.levels or {}).get(p.name)
    if levels is not None:
        lv = sorted(float(v) for v in levels)
        gaps = [b - a for a, b in zip(lv, lv[1:])]
        if min(gaps) <= 0 or max(gaps) - min(gaps) > 1e-9 * max(1.0, abs(max(gaps))):
            raise DataError(f"{path}: levels of '{p.name}' are not equally spaced ({lv})",
                            hint="uniform dequantization needs one bin width: give "
                                 "equally spaced levels, or `bin_width:`")
        known = torch.tensor(lv, dtype=torch.float64)
        parts = x.chunks() if is_lazy(x) else [(0, x)]
        for _, part in parts:  # a streamed table: chunk by chunk
            col = part[:, j].double()
            off = ~(torch.isclose(col[:, None], known[None, :], atol=1e-6).any(1))
            if off.any():
                raise DataError(f"{path}: column '{p.name}' holds {float(col[off][0]):g}, "
                                f"which is not one of its declared levels {lv}")
        return gaps[0]
    bw = cfg.bin_width
    if isinstance(bw, dict):
        bw = bw.get(p.name)
    if bw is not None:
        return float(bw)
    if p.integer:
        return 1.0
    if p.few and len(p.values) > 1:
        return min(b - a for a, b in zip(p.values, p.values[1:]))
    raise DataError(f"{path}: column '{p.name}' is neither integer-valued nor few-valued, so "
                    "its bin width is unknown", hint=f"declare it: `bin_width: {{{p.name}: "
                    "...}` or `levels:`")


def lattice_offsets(x: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Per feature, a value of the training data on its lattice (the smallest), so that
    samples can be put back on the lattice: ``off + floor((y - off) / w) * w``."""
    if is_lazy(x):  # the cached pass's minimum (flowspec.data.row_checks)
        from flowspec.data.row_checks import row_stats

        low = torch.tensor(row_stats(x).low, dtype=widths.dtype)
    else:
        low = x.amin(0).to(widths.dtype)
    return torch.where(widths > 0, low, torch.zeros_like(widths))


def table_dequantization(source: Any, cfg: Any | None, path: str = "data.preprocess"
                         ) -> tuple[torch.Tensor | None, list[str]]:
    """``(per-feature bin widths or None, notes to say at start)`` for a ``[N, D]`` table.

    ``cfg`` is the pipeline the ``dequantize`` step configured, or None when the spec
    lists no step (then only warnings)."""
    x = source.load("train").x
    names = (source.feature_names()[0] if hasattr(source, "feature_names") else None)
    check_train_constant(_where(source), x, names)
    profiles = profile_columns(x, names)
    labels = [p.name for p in profiles]
    if cfg is None:
        return None, discrete_warnings(profiles, set())
    chosen = _chosen(cfg, profiles, labels, path)
    widths = torch.zeros(x.shape[1])
    for j in chosen:
        widths[j] = _width(j, profiles[j], cfg, x, path)
    done = {labels[j] for j in chosen}
    shown = ", ".join(f"'{labels[j]}' (bin {float(widths[j]):g})" for j in chosen)
    offset = -sum(math.log(float(widths[j])) for j in chosen)
    units = ("the reported NLL in nats is an upper bound on -log P of their values"
             if abs(offset) < 1e-12 else
             f"-log P of their values <= NLL {'+' if offset >= 0 else '-'} {abs(offset):.4g} "
             "nats (the bins are not one unit wide)")
    kind = getattr(cfg, "dequantize", "uniform")
    if kind == "none":
        notes = [f"dequantize: none puts column(s) {shown} at their bin centres: the NLL is "
                 "not a bound on anything (for pictures and ablations only)"]
    else:
        notes = [f"dequantized column(s) {shown} with uniform noise over each bin: {units} "
                 "(times the density of the continuous columns)"]
    return widths, discrete_warnings(profiles, done) + notes
