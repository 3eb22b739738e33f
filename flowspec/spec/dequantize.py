"""Tie ``model.dequantize: {variational: ...}`` to ``data.preprocess`` (Flow++).

A variational dequantizer draws the noise ``u`` inside the flow, so the data pipeline
must give it the bin centres of the discrete images (``dequantize: variational``) and
it must know how many levels the bins have (``n_bits``). Either side alone would be
silently wrong (uniform noise added twice, or a bound reported without its noise), so
a spec with one and not the other is refused at the line to edit.
"""

from __future__ import annotations

from typing import Any

from flowspec.errors import Location
from flowspec.graph import GraphIR
from flowspec.spec.problems import Problems

SOURCE_BITS = 8


def _steps(data: dict | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for step in (data or {}).get("preprocess") or []:
        if isinstance(step, dict) and len(step) == 1:
            (name, params), = step.items()
            out[str(name)] = params if isinstance(params, dict) else {}
    return out


def link_dequantizer(graph: GraphIR, data: dict | None, problems: Problems,
                     model_loc: Location | None, data_loc: Location | None) -> None:
    """Set ``graph.levels`` from ``n_bits``; refuse a dequantizer without
    ``dequantize: variational`` in the preprocessing, and the converse."""
    steps = _steps(data)
    variational = steps.get("dequantize", {}).get("kind") == "variational"
    if graph.dequantizer is None:
        if variational:
            problems.add("dequantize: variational leaves the noise to the model, but the model "
                         "has no variational dequantizer", "data.preprocess", data_loc,
                         "add model.dequantize: {variational: {flow: [...]}}, or use "
                         "dequantize: uniform")
        return
    if not variational:
        problems.add("model.dequantize draws the dequantization noise inside the flow, so the "
                     "data must reach it as bin centres", "model.dequantize", model_loc,
                     "set data.preprocess: [{dequantize: variational}, ...]")
        return
    graph.levels = 2 ** int(steps.get("n_bits", {}).get("bits", SOURCE_BITS))
