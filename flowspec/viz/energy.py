"""Pictures of 2-D densities: a learned q next to its target exp(-U)/Z, or next to data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from flowspec.errors import FlowspecError
from flowspec.viz.notes import warn_nonfinite
from flowspec.viz.points import (
    _plt,
    affordable_grid,
    colorbar,
    density_grid,
    dropped_text,
    finite_density,
    finite_points,
    save_figure,
    square,
)


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


def fit_text(flow: Any, energy: Any, n_samples: int) -> str:
    """``KL 0.017 nats · ESS 0.96`` on ``n_samples`` fresh samples at T = 1."""
    from flowspec.energies import evaluate_reverse_kl

    stats = evaluate_reverse_kl(flow, energy, n=n_samples)
    parts = [f"KL {stats['kl_nats']:.3f} nats" if "kl_nats" in stats
             else f"free energy {stats['free_energy']:.3f}"]
    parts.append(f"ESS {stats['ess']:.2f}")
    text = " · ".join(parts) + f" ({n_samples} samples, T = 1)"
    if stats.get("non_finite"):
        text += f", {stats['non_finite']} non-finite"
    return text


@torch.no_grad()
def energy_figure(flow: Any, energy: Any, lim: float = 4.0, n: int = 300,
                  n_samples: int = 20_000, temperatures: Sequence[float] = (1.0,),
                  title: str = "") -> Any:
    """Panels on ``[-lim, lim]²``: the target ``exp(-U)/Z``, the learned density ``q``
    (through ``flow.log_prob``), and a histogram of ``n_samples`` samples of ``q`` per
    temperature. Target and q share one colour scale, set by the target; every panel
    has a colorbar. The title carries KL(q‖p) and the ESS fraction on fresh samples."""
    _check_2d(flow)
    plt = _plt()
    n = affordable_grid(flow, (-lim, lim, -lim, lim), n, what="learned density")
    ticks, target = energy_grid(energy, lim, n)
    q_ticks, learned = density_grid(flow, lim, n)
    learned, note = finite_density(learned, "learned density")
    # Scaled to the target: sharp peaks of q saturate instead of washing out both panels.
    vmax = 1.25 * float(target.max())
    temps = list(temperatures)
    cols = 2 + len(temps)
    fig, axes = plt.subplots(1, cols, figsize=(4.6 * cols, 4.6), squeeze=False)
    axes = axes[0]
    name = getattr(energy, "name", "target")
    mesh = axes[0].pcolormesh(ticks.numpy(), ticks.numpy(), target.numpy(), shading="auto",
                              cmap="viridis", vmin=0, vmax=vmax)
    colorbar(fig, mesh, axes[0], "density")
    square(axes[0], lim, f"target exp(-{name})/Z")
    mesh = axes[1].pcolormesh(q_ticks.numpy(), q_ticks.numpy(), learned.numpy(), shading="auto",
                              cmap="viridis", vmin=0, vmax=vmax)
    colorbar(fig, mesh, axes[1], "density")
    square(axes[1], lim, "learned q" + note)
    edges = torch.linspace(-lim, lim, 101, dtype=torch.float64)
    for ax, t in zip(axes[2:], temps):
        pts, dropped = finite_points(flow.sample(n_samples, temperature=t))
        warn_nonfinite(dropped, n_samples, "dropped from the histogram", f"at T = {t:g}")
        hist = torch.histogramdd(torch.from_numpy(pts).double(), bins=[edges, edges]).hist.T
        mesh = ax.pcolormesh(edges.numpy(), edges.numpy(), hist.numpy(), cmap="viridis")
        colorbar(fig, mesh, ax, "samples per bin")
        square(ax, lim, f"{n_samples} samples of q, T = {t:g}"
               f"{dropped_text(dropped, n_samples)}")
    fig.suptitle(" · ".join(p for p in (title, fit_text(flow, energy, n_samples)) if p))
    return fig


def plot_energy_comparison(flow: Any, energy: Any, path: str | Path, lim: float = 4.0,
                           n: int = 300, n_samples: int = 20_000,
                           temperatures: Sequence[float] = (1.0,), title: str = "") -> Path:
    """Save :func:`energy_figure` as a PNG."""
    return save_figure(energy_figure(flow, energy, lim, n, n_samples, temperatures, title), path)


@torch.no_grad()
def plot_density_2d(flow: Any, path: str | Path, lim: float, data: torch.Tensor | None = None,
                    n: int = 300) -> Path:
    """The learned density of a 2-D flow on ``[-lim, lim]²``, with the data beside it if given."""
    _check_2d(flow)
    plt = _plt()
    ticks, dens = density_grid(flow, lim, affordable_grid(flow, (-lim, lim, -lim, lim), n))
    panels = 2 if data is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 4.5), squeeze=False)
    if data is not None:
        pts = data.detach().cpu().float().numpy()
        axes[0][0].scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        square(axes[0][0], lim, f"data ({pts.shape[0]} points)")
    dens, note = finite_density(dens)
    mesh = axes[0][-1].pcolormesh(ticks.numpy(), ticks.numpy(), dens.numpy(), shading="auto",
                                  cmap="viridis")
    colorbar(fig, mesh, axes[0][-1], "density")
    square(axes[0][-1], lim, "learned density" + note)
    return save_figure(fig, path)
