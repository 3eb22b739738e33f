"""More than two columns: a corner plot of data vs samples.

The standard picture of a tabular density (corner.py, sbi's pairplot): on the
diagonal each column's histogram, data and samples overlaid; below it every pair
of columns as a scatter, data and samples in two colours. Each column's axis spans
the data's robust range (samples outside are counted in the title, never hidden)
and is labelled with the column's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowspec.viz.notes import warn_nonfinite
from flowspec.viz.points import _plt, finite_points, save_figure

#: columns drawn at most (a wider table shows its first ones, said in the title)
MAX_COLUMNS = 8


def column_range(values: Any, quantile: float = 0.005, pad: float = 0.08) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (-1.0, 1.0)
    lo, hi = float(np.quantile(v, quantile)), float(np.quantile(v, 1 - quantile))
    span = max(hi - lo, 1e-3 * max(1.0, abs(hi)))
    return lo - pad * span, hi + pad * span


@torch.no_grad()
def pair_figure(samples: torch.Tensor, data: torch.Tensor | None = None,
                names: list[str] | None = None, title: str = "",
                max_points: int = 2000) -> Any:
    """The corner plot of ``samples`` ``[N, D]`` (and ``data``); returns the figure."""
    import numpy as np

    plt = _plt()
    pts, dropped = finite_points(samples)
    warn_nonfinite(dropped, pts.shape[0] + dropped, "dropped from the plot")
    ref = data.detach().cpu().double().numpy() if data is not None else None
    d_all = pts.shape[1]
    d = min(d_all, MAX_COLUMNS)
    labels = list(names or [f"x{j}" for j in range(d_all)])[:d]
    basis = ref if ref is not None else pts
    ranges = [column_range(basis[:, j]) for j in range(d)]
    size = min(2.2, 14.0 / d)
    fig, axes = plt.subplots(d, d, figsize=(size * d + 0.8, size * d + 0.8), squeeze=False)
    show_s = pts[:max_points]
    show_r = ref[:max_points] if ref is not None else None
    for i in range(d):
        for j in range(d):
            ax = axes[i][j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                bins = np.linspace(*ranges[j], 31)
                if ref is not None:
                    ax.hist(ref[:, j], bins=bins, density=True, color="C0", alpha=0.45,
                            label="data")
                ax.hist(pts[:, j], bins=bins, density=True, histtype="step", color="C1",
                        linewidth=1.5, label="samples")
                ax.set_yticks([])
            else:
                ax.scatter(show_s[:, j], show_s[:, i], s=1, alpha=0.35, color="C1")
                if show_r is not None:  # the data on top: often fewer rows than samples
                    ax.scatter(show_r[:, j], show_r[:, i], s=3, alpha=0.7, color="C0")
                ax.set_ylim(*ranges[i])
            ax.set_xlim(*ranges[j])
            ax.tick_params(labelsize=7)
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
            elif i != j:
                ax.set_yticklabels([])
    if ref is not None:
        axes[0][0].legend(fontsize=7, loc="upper right", frameon=False)
    outside = int(sum(((pts[:, j] < lo) | (pts[:, j] > hi)).sum()
                      for j, (lo, hi) in enumerate(ranges)))
    parts = [title] if title else []
    parts.append(f"{pts.shape[0] + dropped} samples (orange)"
                 + (f" vs {ref.shape[0]} test rows (blue)" if ref is not None else ""))
    if dropped:
        parts.append(f"{dropped} non-finite dropped")
    if outside:
        parts.append(f"{outside} sample values outside the axes")
    if d < d_all:
        parts.append(f"first {d} of {d_all} columns")
    fig.suptitle(" · ".join(parts), fontsize=10)
    return fig


def plot_pairs(samples: torch.Tensor, path: str | Path, data: torch.Tensor | None = None,
               names: list[str] | None = None, title: str = "") -> Path:
    """Save :func:`pair_figure` as a PNG."""
    return save_figure(pair_figure(samples, data, names, title), path)
