"""The layer-wise view of a 2-D flow: points passing through every node.

Top row: test points on their way data -> latent, coloured by where they
started. Bottom row: prior samples on their way latent -> data. The
intermediate values come from the flow's own walks (``trace_forward`` /
``trace_inverse``), not from a second graph walker. Every panel of a row
shares that row's axis limits, so the panels compare (a node that spreads the
points out shows it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowspec.errors import FlowspecError
from flowspec.viz.notes import warn_nonfinite
from flowspec.viz.points import _plt, finite_points, save_figure


def _as_points(value) -> tuple | None:
    """(finite 2-D points, how many were dropped), or None for a non-2-D tensor."""
    if torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == 2:
        return finite_points(value)
    return None


def row_limit(panels: list, quantile: float = 0.999) -> float:
    """One symmetric axis limit for a whole row of panels, so that they compare: the
    ``quantile`` of |coordinate| over every panel's points, plus a margin."""
    import numpy as np

    pts = [p for _, (p, _) in panels if p.shape[0]]
    if not pts:
        return 1.0
    return float(np.quantile(np.abs(np.concatenate(pts)), quantile)) * 1.1 + 1e-3


@torch.no_grad()
def trace_figure(flow, x: torch.Tensor, n_samples: int = 2000, temperature: float = 1.0,
                 max_panels: int = 12):
    """The figure of :func:`plot_trace`; every panel of a row shares that row's limits."""
    if tuple(flow.input_shape) != (2,):
        raise FlowspecError("trace draws 2-D flows only", hint="this flow's input is "
                            f"{list(flow.input_shape)}")
    fwd = [("data", x)] + flow.trace_forward(x)
    inv = [("latent", flow.sample_with_latents(n_samples, temperature=temperature)[1])]
    inv += flow.trace_inverse(n_samples, temperature=temperature, z=inv[0][1])
    fwd = [(n, p) for n, v in fwd if (p := _as_points(v)) is not None]
    inv = [(n, p) for n, v in inv if (p := _as_points(v)) is not None]
    if len(fwd) > max_panels:  # keep first, last and evenly spaced middles
        keep = torch.linspace(0, len(fwd) - 1, max_panels).round().long().unique().tolist()
        fwd = [fwd[i] for i in keep]
        inv_keep = torch.linspace(0, len(inv) - 1, max_panels).round().long().unique().tolist()
        inv = [inv[i] for i in inv_keep]
    for what, panels in (("test points", fwd), ("samples", inv)):
        dropped = max((d for _, (_, d) in panels), default=0)
        warn_nonfinite(dropped, n_samples if what == "samples" else x.shape[0],
                       "dropped from the trace", f"({what}, worst panel)")
    cols = max(len(fwd), len(inv))
    plt = _plt()
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 5.6), squeeze=False)
    import numpy as np

    start = fwd[0][1][0]
    colour = np.arctan2(start[:, 1] - start[:, 1].mean(), start[:, 0] - start[:, 0].mean())
    for row, panels, colours in ((0, fwd, colour), (1, inv, None)):
        lim = row_limit(panels)
        for c in range(cols):
            ax = axes[row][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            name, (p, dropped) = panels[c]
            cs = colours if colours is not None and dropped == 0 else None
            ax.scatter(p[:, 0], p[:, 1], s=1, c=cs if cs is not None else "C1",
                       cmap="hsv" if cs is not None else None, alpha=0.6)
            ax.set_title(name + (f"\n({dropped} non-finite dropped)" if dropped else ""),
                         fontsize=8)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
        axes[row][0].set_yticks([-lim, 0, lim])
        axes[row][0].set_yticklabels([f"{-lim:.2g}", "0", f"{lim:.2g}"], fontsize=7)
    axes[0][0].set_ylabel("data → latent")
    axes[1][0].set_ylabel("latent → data")
    return fig


def plot_trace(flow, x: torch.Tensor, path: str | Path, n_samples: int = 2000,
               temperature: float = 1.0, max_panels: int = 12) -> Path:
    """Save :func:`trace_figure` as a PNG."""
    return save_figure(trace_figure(flow, x, n_samples, temperature, max_panels), path, dpi=90)
