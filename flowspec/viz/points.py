"""2-D pictures: samples next to data, and the learned density on a grid (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def density_grid(flow, lim: float, n: int = 200, context=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(log p)`` of a 2-D flow on an ``n x n`` grid over ``[-lim, lim]^2``."""
    ref = flow._reference_tensor()
    ticks = torch.linspace(-lim, lim, n, dtype=ref.dtype, device=ref.device)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    logp = torch.cat([flow.log_prob(chunk, context) for chunk in pts.split(10_000)])
    return ticks.cpu(), logp.exp().reshape(n, n).cpu()


def plot_samples_2d(
    flow,
    samples: torch.Tensor,
    path: str | Path,
    data: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Panels: data (if given), samples, learned density — on shared axes."""
    plt = _plt()
    import numpy as np

    given = ([data] if data is not None else []) + [samples]
    pts = [t.detach().cpu().float().numpy() for t in given]
    lim = float(np.quantile(np.abs(np.concatenate(pts)), 0.995)) * 1.1 + 1e-3
    panels = (["data"] if data is not None else []) + ["samples", "density"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        if name == "density":
            ticks, dens = density_grid(flow, lim)
            ax.pcolormesh(ticks.numpy(), ticks.numpy(), dens.numpy(), shading="auto",
                          cmap="viridis")
        else:
            p = pts[0] if name == "data" else pts[-1]
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5, color="C0" if name == "data" else "C1")
        ax.set_title(name)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write as PNG (creating folders), and free the figure."""
    plt = _plt()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
