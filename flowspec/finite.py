"""Non-finite values, counted per example, and where samples went non-finite.

``Flow.sample`` returns what the inverse walk computed, NaN included; code that
draws or saves samples uses these helpers to *say* how many are not finite
(instead of clamping them into black tiles) and, when asked, which node of the
inverse walk produced them first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch


def nonfinite_rows(x: Any) -> torch.Tensor:
    """Bool ``[batch]``: examples with at least one NaN or infinity (over a tuple too)."""
    xs = x if isinstance(x, (tuple, list)) else (x,)
    out = None
    for t in xs:
        if not torch.is_tensor(t) or t.dim() == 0:
            continue
        rows = torch.zeros(t.shape[0], dtype=torch.bool, device=t.device) \
            if not t.is_floating_point() else ~torch.isfinite(t.reshape(t.shape[0], -1)).all(1)
        out = rows if out is None else out | rows
    if out is None:
        raise ValueError("expected a batched tensor (or a tuple of them)")
    return out


def count_nonfinite(x: Any) -> int:
    """How many examples of a batch hold a NaN or an infinity."""
    return int(nonfinite_rows(x).sum())


@dataclass
class SampleCheck:
    """Non-finite samples of one batch, and the node where each first went non-finite."""

    n: int
    nonfinite: int
    indices: list[int] = field(default_factory=list)
    #: node id -> examples that first went non-finite at that node of the inverse walk
    first_nodes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.nonfinite:
            return f"all {self.n} samples are finite"
        text = f"{self.nonfinite} of {self.n} samples are not finite (NaN or inf)"
        if self.first_nodes:
            top = sorted(self.first_nodes.items(), key=lambda kv: -kv[1])[:3]
            text += "; first non-finite at " + ", ".join(f"{k} ({v})" for k, v in top)
        return text


@torch.no_grad()
def check_samples(flow: Any, latents: Any, context: Any = None) -> SampleCheck:
    """Re-run the inverse walk from ``latents`` (e.g. from ``flow.sample_with_latents``)
    with a per-node check; -> counts and the first node per non-finite sample."""
    seen: torch.Tensor | None = None
    first: Counter[str] = Counter()

    def watch(nid: str, _inp: Any, out: Any, _ld: Any) -> None:
        nonlocal seen
        bad = nonfinite_rows(out)
        new = bad if seen is None else bad & ~seen
        if bool(new.any()):
            first[nid] += int(new.sum())
        seen = bad if seen is None else seen | bad

    flow.watch = watch
    try:
        x = flow.decode(latents, context)
    finally:
        flow.watch = None
    rows = nonfinite_rows(x)
    idx = rows.nonzero().flatten().tolist()
    return SampleCheck(n=x.shape[0], nonfinite=len(idx), indices=idx, first_nodes=dict(first))
