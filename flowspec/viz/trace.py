"""The layer-wise view of a 2-D flow: points passing through every node.

Top row: test points on their way data -> latent, coloured by where they
started. Bottom row: prior samples on their way latent -> data. The
intermediate values come from the flow's own walks (``trace_forward`` /
``trace_inverse``), not from a second graph walker. The panels of a row share
that row's axis limits when their scales are comparable, so a node that spreads
the points out shows it; when they are not (data in natural units, e.g. a table
at 170/60, next to the panels after a ``standardize``), every panel gets its own
limits and ticks, and the figure says so.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowspec.errors import FlowspecError
from flowspec.viz.notes import warn_nonfinite
from flowspec.viz.points import _plt, finite_points, robust_box, save_figure


def _as_points(value) -> tuple | None:
    """(finite 2-D points, how many were dropped), or None for a non-2-D tensor."""
    if torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == 2:
        return finite_points(value)
    return None


def row_limit(panels: list, quantile: float = 0.999) -> float:
    """One symmetric axis limit for a whole row of panels: the ``quantile`` of
    |coordinate| over every panel's points, plus a margin."""
    import numpy as np

    pts = [p for _, (p, _) in panels if p.shape[0]]
    if not pts:
        return 1.0
    return float(np.quantile(np.abs(np.concatenate(pts)), quantile)) * 1.1 + 1e-3


#: a row's panels share limits unless the shared box is this many times a panel's own
SHARE_UP_TO = 5.0


def row_boxes(panels: list) -> tuple[list, bool]:
    """``(one box per panel, shared?)``: the union of the panels' robust boxes when every
    panel fills at least 1/SHARE_UP_TO of it in both axes, else each panel's own box."""
    own = [robust_box(p) for _, (p, _) in panels]
    if not own:
        return [], True
    union = (min(b[0] for b in own), max(b[1] for b in own),
             min(b[2] for b in own), max(b[3] for b in own))
    span = (union[1] - union[0], union[3] - union[2])
    worst = max(max(span[0] / max(b[1] - b[0], 1e-12), span[1] / max(b[3] - b[2], 1e-12))
                for b in own)
    if worst <= SHARE_UP_TO:
        return [union] * len(own), True
    return own, False


@torch.no_grad()
def trace_figure(flow, x: torch.Tensor, n_samples: int = 2000, temperature: float = 1.0,
                 max_panels: int = 12, names: list[str] | None = None):
    """The figure of :func:`plot_trace` (see the module doc for the axes); ``names``:
    the data's column names, for the data panel's axes."""
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
    separate = []
    for row, panels, colours in ((0, fwd, colour), (1, inv, None)):
        boxes, shared = row_boxes(panels)
        if not shared:
            separate.append("data → latent" if row == 0 else "latent → data")
        for c in range(cols):
            ax = axes[row][c]
            if c >= len(panels):
                ax.axis("off")
                continue
            name, (p, dropped) = panels[c]
            cs = colours if colours is not None and dropped == 0 else None
            ax.scatter(p[:, 0], p[:, 1], s=1, c=cs if cs is not None else "C1",
                       cmap="hsv" if cs is not None else None, alpha=0.6)
            ax.set_title(name + (f"\n({dropped} non-finite dropped)" if dropped else ""),
                         fontsize=8)
            box = boxes[c]
            ax.set_xlim(box[0], box[1])
            ax.set_ylim(box[2], box[3])
            ax.tick_params(labelsize=6)
            if shared and c > 0:
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.locator_params(nbins=3)
    if names:  # the panels in data space: the first of the top row, the last of the bottom
        axes[0][0].set_xlabel(names[0], fontsize=8)
        last = axes[1][len(inv) - 1]
        last.set_xlabel(names[0], fontsize=8)
        last.set_ylabel(names[1], fontsize=8)
    axes[0][0].set_ylabel("data → latent" + (f"\n{names[1]}" if names else ""))
    axes[1][0].set_ylabel("latent → data")
    if separate:
        fig.suptitle(f"axes per panel in {' and '.join(separate)} (the panels' scales differ "
                     "too much to share them, e.g. before and after standardize)", fontsize=9)
    return fig


def plot_trace(flow, x: torch.Tensor, path: str | Path, n_samples: int = 2000,
               temperature: float = 1.0, max_panels: int = 12,
               names: list[str] | None = None) -> Path:
    """Save :func:`trace_figure` as a PNG."""
    return save_figure(trace_figure(flow, x, n_samples, temperature, max_panels, names), path,
                       dpi=90)
