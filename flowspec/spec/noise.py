"""``sample.denoise`` needs the noise it removes (``maximum_likelihood``'s ``noise``)."""

from __future__ import annotations

from typing import Any

from flowspec.errors import Location
from flowspec.registry import split_named
from flowspec.spec.problems import Problems


def check_denoise(train: dict, sample: dict, problems: Problems,
                  loc: Location | None) -> None:
    """A denoising step without training noise would move samples by σ = 0: refuse it."""
    if not (sample or {}).get("denoise"):
        return
    try:
        name, params = split_named(train.get("objective") or "maximum_likelihood")
    except ValueError:
        return  # reported by the schema
    noise: Any = (params or {}).get("noise", 0.0) if name == "maximum_likelihood" else None
    if not noise:
        problems.add("sample.denoise removes the training noise, but the flow is trained "
                     "without any", "sample.denoise", loc,
                     "set train.objective: {maximum_likelihood: {noise: 0.025}} (TarFlow), "
                     "or drop sample.denoise")
