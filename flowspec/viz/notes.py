"""What a picture must say out loud: non-finite samples, dropped points, the run it shows.

Pictures never hide a NaN. The drawing functions count non-finite samples, mark
or drop them, and raise a :class:`SampleWarning` with one line of text
("12 of 64 samples are non-finite (marked)"); :func:`collect_warnings` hands those
lines to whoever prints (the CLI, the training loop's reporter). Python users see
them as ordinary warnings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flowspec.finite import nonfinite_rows

__all__ = ["SampleWarning", "collect_warnings", "nonfinite_rows", "nonfinite_text", "run_title",
           "warn_nonfinite", "warn_nonfinite_grid"]


class SampleWarning(UserWarning):
    """A picture shows samples that are not what they seem (non-finite, dropped)."""


def nonfinite_text(bad: int, total: int, action: str = "marked") -> str:
    return f"{bad} of {total} samples are non-finite ({action})"


def warn_nonfinite(bad: int, total: int, action: str = "marked", where: str = "") -> None:
    """One warning line when ``bad > 0``; nothing otherwise."""
    if bad:
        text = nonfinite_text(bad, total, action) + (f" {where}" if where else "")
        warnings.warn(text, SampleWarning, stacklevel=3)


def warn_nonfinite_grid(bad: int, total: int, what: str = "density") -> None:
    """A density evaluated on a grid had NaN/inf values (drawn as 0)."""
    if bad:
        warnings.warn(f"{bad} of {total} grid values of the {what} are non-finite "
                      "(shown as 0)", SampleWarning, stacklevel=3)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Collect the :class:`SampleWarning` lines raised inside the block (every one, not
    once per place as Python's default filter would), for the caller to print."""
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SampleWarning)
        yield lines
    for w in caught:
        if issubclass(w.category, SampleWarning):
            lines.append(str(w.message))
        else:  # anything else goes on as it would have
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"


def run_title(flow: Any, info: dict | None = None) -> str:
    """``name · step N · val 3.84 bits/dim`` from a checkpoint's info (``flow.checkpoint_info``);
    just the name for a flow that carries none (e.g. built from a spec)."""
    name = getattr(getattr(flow, "spec", None), "name", None) or "flow"
    info = info if info is not None else getattr(flow, "checkpoint_info", None)
    if not info:
        return name
    parts = [name]
    if info.get("step") is not None:
        parts.append(f"step {info['step']}")
    metrics = dict(info.get("metrics") or {})
    shown = _title_metrics(flow)
    if not shown:
        return " · ".join(parts)  # e.g. energies: the figure computes KL and ESS afresh
    split = info.get("split") or metrics.get("split") or _split_of(flow)
    at = metrics.get("step")
    when = f" (at step {at})" if at is not None and at != info.get("step") else ""
    for key, unit in shown:
        v = metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            bound = " (variational bound)" if getattr(flow, "dequantizer", None) is not None \
                else ""
            parts.append(f"{split + ' ' if split else ''}NLL {_fmt(v)} {unit}{bound}{when}")
            break
    return " · ".join(parts)


def _title_metrics(flow: Any) -> list[tuple[str, str]]:
    """``(metric, unit)`` a title may show, as the flow's objective declares them (none
    for a flow without a spec or with an unknown objective)."""
    spec = getattr(flow, "spec", None)
    if spec is None or not isinstance(getattr(spec, "train", None), dict):
        return []
    try:
        from flowspec.objectives import objective_class

        cls = objective_class(spec)
    except Exception:  # noqa: BLE001 -- a title never fails a picture
        return []
    units = {m.name: m.unit for m in cls.metrics}
    return [(name, units.get(name, "")) for name in cls.title_metrics]


def _split_of(flow: Any) -> str:
    """The split a run's periodic evaluation used: validation unless the spec has none."""
    data = getattr(getattr(flow, "spec", None), "data", None) or {}
    if not isinstance(data, dict):
        return ""
    return "val" if float(data.get("val_fraction", 0.1) or 0) > 0 else "test"
