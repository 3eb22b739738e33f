"""Pictures of 2-D densities: a learned q next to its target exp(-U)/Z, or next to data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowspec.errors import FlowspecError
from flowspec.viz.points import _plt, density_grid


def _check_2d(flow: Any) -> None:
    if tuple(flow.input_shape) != (2,):
        raise FlowspecError("this picture is drawn for 2-D flows only",
                            hint=f"this flow's input is {list(flow.input_shape)}")


@torch.no_grad()
def energy_grid(energy: Any, lim: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-U)/Z`` on the same ``n x n`` grid as :func:`~flowspec.viz.points.density_grid`."""
    ticks = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    u = energy(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
    try:
        log_z = float(energy.log_z)
    except (AttributeError, FlowspecError):  # no normaliser: scale to the grid's own mass
        log_z = float(torch.logsumexp(-u, 0)) + 2 * float(torch.log(ticks[1] - ticks[0]))
    return ticks, torch.exp(-u - log_z).reshape(n, n)


def _save(fig: Any, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _square(ax: Any, lim: float, title: str) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)


@torch.no_grad()
def plot_energy_comparison(flow: Any, energy: Any, path: str | Path, lim: float = 4.0,
                           n: int = 300, n_samples: int = 20_000) -> Path:
    """Three panels on ``[-lim, lim]²``: the target ``exp(-U)/Z``, the learned density
    ``q`` (through ``flow.log_prob``), and a histogram of samples of ``q``. The two
    densities share one colour scale, set by the target."""
    _check_2d(flow)
    plt = _plt()
    ticks, target = energy_grid(energy, lim, n)
    q_ticks, learned = density_grid(flow, lim, n)
    learned = torch.nan_to_num(learned, nan=0.0, posinf=0.0)
    samples = flow.sample(n_samples).detach().cpu().double()
    # Scaled to the target: sharp peaks of q saturate instead of washing out both panels.
    vmax = 1.25 * float(target.max())
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    name = getattr(energy, "name", "target")
    axes[0].pcolormesh(ticks.numpy(), ticks.numpy(), target.numpy(), shading="auto",
                       cmap="viridis", vmin=0, vmax=vmax)
    _square(axes[0], lim, f"target exp(-{name})/Z")
    axes[1].pcolormesh(q_ticks.numpy(), q_ticks.numpy(), learned.numpy(), shading="auto",
                       cmap="viridis", vmin=0, vmax=vmax)
    _square(axes[1], lim, "learned q")
    edges = torch.linspace(-lim, lim, 101, dtype=torch.float64)
    hist = torch.histogramdd(samples, bins=[edges, edges]).hist.T
    axes[2].pcolormesh(edges.numpy(), edges.numpy(), hist.numpy(), cmap="viridis")
    _square(axes[2], lim, f"{n_samples} samples of q")
    return _save(fig, path)


@torch.no_grad()
def plot_density_2d(flow: Any, path: str | Path, lim: float, data: torch.Tensor | None = None,
                    n: int = 300) -> Path:
    """The learned density of a 2-D flow on ``[-lim, lim]²``, with the data beside it if given."""
    _check_2d(flow)
    plt = _plt()
    ticks, dens = density_grid(flow, lim, n)
    panels = 2 if data is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4.5), squeeze=False)
    if data is not None:
        pts = data.detach().cpu().float().numpy()
        axes[0][0].scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        _square(axes[0][0], lim, f"data ({pts.shape[0]} points)")
    axes[0][-1].pcolormesh(ticks.numpy(), ticks.numpy(), dens.numpy(), shading="auto",
                           cmap="viridis")
    _square(axes[0][-1], lim, "learned density")
    return _save(fig, path)
