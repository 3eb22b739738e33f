"""2-D pictures: samples next to data (one panel per temperature) and the learned density.

Builders (``*_figure``) return the matplotlib figure, so tests and notebooks can
look at its axes; ``plot_*`` save it. Non-finite samples cannot be drawn in a
scatter plot: they are dropped, counted in the panel's title and warned about.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from flowspec.viz.notes import (
    SampleWarning,
    nonfinite_rows,
    warn_nonfinite,
    warn_nonfinite_grid,
)

#: seconds a picture's density grid may take (``$FLOWSPEC_GRID_SECONDS``); a flow whose
#: log_prob is slower (an ODE solve per point) is drawn on a coarser grid, said out loud
GRID_SECONDS = 120.0
#: the coarsest grid drawn, whatever it costs
MIN_GRID = 40
_PROBE = 16  # a 16 x 16 probe grid times log_prob before the full grid


def grid_points(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """The ``[len(ys)·len(xs), 2]`` points of the grid ``xs x ys``, row by row in y."""
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def affordable_grid(flow: Any, box: tuple[float, float, float, float], n: int,
                    context: Any = None, what: str = "density") -> int:
    """``n``, or a smaller grid size whose ``n x n`` log-densities fit in
    ``$FLOWSPEC_GRID_SECONDS`` (default 120) at the speed a 16 x 16 probe of ``box``
    measured: a picture of a continuous flow (adaptive ODE, exact trace) would
    otherwise take most of an hour at 300 x 300. A reduced grid is warned about."""
    budget = float(os.environ.get("FLOWSPEC_GRID_SECONDS", GRID_SECONDS))
    if n <= MIN_GRID:
        return n
    ref = flow.reference_tensor()
    probe = grid_points(torch.linspace(box[0], box[1], _PROBE, dtype=ref.dtype,
                                       device=ref.device),
                        torch.linspace(box[2], box[3], _PROBE, dtype=ref.dtype,
                                       device=ref.device))
    start = time.perf_counter()
    flow.log_prob(probe, context)
    per_point = (time.perf_counter() - start) / probe.shape[0]
    if per_point * n * n <= budget:
        return n
    m = max(MIN_GRID, int(math.sqrt(budget / per_point)))
    if m >= n:
        return n
    warnings.warn(f"the {what} is drawn on a {m}x{m} grid, not {n}x{n}: log_prob takes "
                  f"{1000 * per_point:.1f} ms a point here, so the full grid would take about "
                  f"{per_point * n * n / 60:.0f} min (raise FLOWSPEC_GRID_SECONDS, now "
                  f"{budget:g}, for a finer one)", SampleWarning, stacklevel=3)
    return m


def grid_log_prob(flow: Any, pts: torch.Tensor, context: Any = None) -> torch.Tensor:
    """``log p`` of many grid points, in chunks a batch can hold."""
    return torch.cat([flow.log_prob(chunk, context) for chunk in pts.split(10_000)])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def density_grid(flow, lim: float, n: int = 200, context=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(log p)`` of a 2-D flow on an ``n x n`` grid over ``[-lim, lim]^2``."""
    ref = flow.reference_tensor()
    ticks = torch.linspace(-lim, lim, n, dtype=ref.dtype, device=ref.device)
    logp = grid_log_prob(flow, grid_points(ticks, ticks), context)
    return ticks.cpu(), logp.exp().reshape(n, n).cpu()


def finite_density(dens: torch.Tensor, what: str = "density") -> tuple[torch.Tensor, str]:
    """NaN/inf grid values -> 0 for drawing, with a note for the panel's title (and a
    warning) saying how many there were."""
    bad = int((~torch.isfinite(dens)).sum())
    if not bad:
        return dens, ""
    warn_nonfinite_grid(bad, dens.numel(), what)
    return torch.nan_to_num(dens, nan=0.0, posinf=0.0, neginf=0.0), \
        f"\n{bad} of {dens.numel()} grid values non-finite, shown as 0"


def finite_points(x: torch.Tensor) -> tuple[Any, int]:
    """(finite rows as a numpy array, how many rows were dropped)."""
    bad = nonfinite_rows(x)
    return x[~bad].detach().cpu().float().numpy(), int(bad.sum())


def square(ax: Any, lim: float, title: str, fontsize: float | None = None) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=fontsize)


def colorbar(fig: Any, mappable: Any, ax: Any, label: str) -> None:
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(label)


def dropped_text(dropped: int, total: int) -> str:
    return f"\n{dropped} of {total} non-finite, dropped" if dropped else ""


Box = tuple[float, float, float, float]


def robust_box(points: Any, quantile: float = 0.005, pad: float = 0.08) -> Box:
    """``(x0, x1, y0, y1)``: the ``quantile`` .. ``1 - quantile`` range of each coordinate
    plus a margin -- the data's own range, so a table at 170/60 fills the panel rather
    than being a sliver at the edge of axes centred on the origin."""
    import numpy as np

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    lo, hi = np.quantile(pts, quantile, axis=0), np.quantile(pts, 1 - quantile, axis=0)
    span = np.maximum(hi - lo, 1e-3 * np.maximum(1.0, np.abs(hi)))
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


@torch.no_grad()
def density_box(flow, box: Box, n: int = 200, context=None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x ticks, y ticks, exp(log p))`` of a 2-D flow on an ``n x n`` grid over ``box``
    (coarser where ``n x n`` would exceed the time budget: :func:`affordable_grid`)."""
    n = affordable_grid(flow, box, n, context)
    ref = flow.reference_tensor()
    xs = torch.linspace(box[0], box[1], n, dtype=ref.dtype, device=ref.device)
    ys = torch.linspace(box[2], box[3], n, dtype=ref.dtype, device=ref.device)
    logp = grid_log_prob(flow, grid_points(xs, ys), context)
    return xs.cpu(), ys.cpu(), logp.exp().reshape(n, n).cpu()


def frame(ax: Any, box: Box, title: str, names: list[str] | None = None,
          fontsize: float | None = None) -> None:
    """Limits of ``box`` and the column ``names``; equal aspect for unnamed coordinates of
    similar span (2-D toys), never for named columns (their units differ)."""
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ratio = (box[1] - box[0]) / max(box[3] - box[2], 1e-12)
    if not names and 1 / 3 <= ratio <= 3:
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=fontsize)
    if names:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])


def outside_text(pts: Any, box: Box) -> str:
    """How many finite points fall outside the axes (never clipped silently)."""
    if not len(pts):
        return ""
    out = int(((pts[:, 0] < box[0]) | (pts[:, 0] > box[1]) | (pts[:, 1] < box[2])
               | (pts[:, 1] > box[3])).sum())
    return f"\n{out} outside the axes" if out else ""


@torch.no_grad()
def samples_2d_figure(flow, samples: dict[float, torch.Tensor], data: torch.Tensor | None = None,
                      title: str = "", density: bool = True,
                      names: list[str] | None = None) -> Any:
    """Panels on shared axes: the data (if given), the samples at each temperature, and
    the learned density with a colorbar. The axes span the data's robust range (else
    the samples'), labelled with the column ``names``. Returns the figure."""
    plt = _plt()
    import numpy as np

    drawn = {t: finite_points(x) for t, x in samples.items()}
    for t, (pts, dropped) in drawn.items():
        warn_nonfinite(dropped, pts.shape[0] + dropped, "dropped from the plot", f"at T = {t:g}")
    ref = data.detach().cpu().float().numpy() if data is not None else None
    basis = ref if ref is not None else np.concatenate(
        [p for p, _ in drawn.values()] or [np.zeros((0, 2))])
    box = robust_box(basis)
    panels = (["data"] if ref is not None else []) + list(drawn) + (["density"] if density else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.6, 4.1),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "density":
            xs, ys, dens = density_box(flow, box)
            dens, note = finite_density(dens)
            mesh = ax.pcolormesh(xs.numpy(), ys.numpy(), dens.numpy(), shading="auto",
                                 cmap="viridis")
            colorbar(fig, mesh, ax, "p(x)")
            frame(ax, box, "learned density" + note, names)
        elif panel == "data":
            ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.5, color="C0")
            frame(ax, box, f"data ({ref.shape[0]} test points){outside_text(ref, box)}", names)
        else:
            pts, dropped = drawn[panel]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="C1")
            total = pts.shape[0] + dropped
            frame(ax, box, f"{total} samples, T = {panel:g}{dropped_text(dropped, total)}"
                  f"{outside_text(pts, box)}", names)
    if title:
        fig.suptitle(title)
    return fig


def plot_samples_2d(
    flow,
    samples: torch.Tensor | dict[float, torch.Tensor],
    path: str | Path,
    data: torch.Tensor | None = None,
    title: str = "",
    temperature: float = 1.0,
    names: list[str] | None = None,
) -> Path:
    """Save :func:`samples_2d_figure` (one tensor of samples means one temperature)."""
    if torch.is_tensor(samples):
        samples = {temperature: samples}
    return save_figure(samples_2d_figure(flow, samples, data, title, names=names), path)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write as PNG (creating folders), and free the figure."""
    plt = _plt()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
