"""2-D pictures on the torus: samples and density of two angles on [-π, π)².

A density of angles lives on a torus, not a plane: the square's opposite edges are the
same points. The panels span exactly one period with ticks in multiples of π/2 and say
that the edges meet, so mass that crosses the seam reads as one mode split in two, not
as two modes. The density panel also shows ``∫ p`` over the period (1 for a density on
the torus; less means mass the flow puts outside it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from flowspec.viz.points import (
    _plt,
    affordable_grid,
    colorbar,
    dropped_text,
    finite_density,
    finite_points,
    grid_log_prob,
    grid_points,
    save_figure,
)

_TICKS = [(-math.pi, "−π"), (-math.pi / 2, "−π/2"), (0.0, "0"), (math.pi / 2, "π/2"),
          (math.pi, "π")]


def wrap_angles(x: torch.Tensor, low: float = -math.pi, high: float = math.pi
                ) -> tuple[torch.Tensor, int]:
    """Points onto ``[low, high)²`` and how many were outside (wrapped, never dropped)."""
    out_of = (x < low) | (x >= high)
    outside = int(out_of.any(1).sum()) if x.numel() else 0
    return torch.where(out_of, torch.remainder(x - low, high - low) + low, x), outside


def angle_axes(ax: Any, title: str, low: float = -math.pi, high: float = math.pi,
               fontsize: float | None = None) -> None:
    """One period on both axes, ticks at multiples of π/2 (for [-π, π)), angles named."""
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    if (low, high) == (-math.pi, math.pi):
        ax.set_xticks([t for t, _ in _TICKS], [s for _, s in _TICKS])
        ax.set_yticks([t for t, _ in _TICKS], [s for _, s in _TICKS])
    ax.set_xlabel("θ₁ (wraps: left edge = right edge)")
    ax.set_ylabel("θ₂ (wraps)")
    ax.set_title(title, fontsize=fontsize)


@torch.no_grad()
def torus_density(flow: Any, n: int = 160, low: float = -math.pi, high: float = math.pi,
                  context: Any = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(cell edges, exp(log p) at the n x n cell centres, ∫ p over the period)``;
    centres, so the seam is sampled once, not twice."""
    n = affordable_grid(flow, (low, high, low, high), n, context)
    ref = flow.reference_tensor()
    step = (high - low) / n
    centres = low + step * (torch.arange(n, dtype=ref.dtype, device=ref.device) + 0.5)
    logp = grid_log_prob(flow, grid_points(centres, centres), context)
    dens = logp.exp().reshape(n, n).cpu()
    mass = float(torch.nan_to_num(dens, nan=0.0, posinf=0.0).sum() * step * step)
    edges = torch.linspace(low, high, n + 1)
    return edges, dens, mass


def torus_figure(flow: Any, samples: dict[float, torch.Tensor],
                 data: torch.Tensor | None = None, title: str = "",
                 period: tuple[float, float] = (-math.pi, math.pi)) -> Any:
    """Panels on the period square: data, samples at each temperature, learned density."""
    plt = _plt()
    low, high = period
    panels: list[Any] = (["data"] if data is not None else []) + list(samples) + ["density"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) + 0.6, 4.3),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "density":
            edges, dens, mass = torus_density(flow, low=low, high=high)
            dens, note = finite_density(dens)
            mesh = ax.pcolormesh(edges.numpy(), edges.numpy(), dens.numpy(), cmap="viridis")
            colorbar(fig, mesh, ax, "p(θ₁, θ₂)")
            angle_axes(ax, f"learned density, ∫p = {mass:.3f}{note}", low, high)
            continue
        pts_t = data if panel == "data" else samples[panel]
        pts, dropped = finite_points(pts_t)
        wrapped, outside = wrap_angles(torch.as_tensor(pts), low, high)
        note = f"\n{outside} outside the period, wrapped" if outside else ""
        color = "C0" if panel == "data" else "C1"
        ax.scatter(wrapped[:, 0].numpy(), wrapped[:, 1].numpy(), s=2, alpha=0.5, color=color)
        total = pts.shape[0] + dropped
        head = (f"data ({total} test points)" if panel == "data"
                else f"{total} samples, T = {panel:g}")
        angle_axes(ax, head + dropped_text(dropped, total) + note, low, high)
    if title:
        fig.suptitle(title + " · on the torus")
    return fig


def plot_torus(flow: Any, samples: dict[float, torch.Tensor], path: str | Path,
               data: torch.Tensor | None = None, title: str = "",
               period: tuple[float, float] = (-math.pi, math.pi)) -> Path:
    """Save :func:`torus_figure`."""
    return save_figure(torus_figure(flow, samples, data, title, period), path)
