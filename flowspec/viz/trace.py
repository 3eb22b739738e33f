"""The layer-wise view of a 2-D flow: points passing through every node.

Top row: test points on their way data -> latent, coloured by where they
started. Bottom row: prior samples on their way latent -> data. The
intermediate values come from the flow's own walks (``trace_forward`` /
``trace_inverse``), not from a second graph walker.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowspec.errors import FlowspecError
from flowspec.viz.points import _plt, save_figure


def _as_points(value) -> torch.Tensor | None:
    if torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == 2:
        return value.detach().cpu().float().numpy()
    return None


@torch.no_grad()
def plot_trace(flow, x: torch.Tensor, path: str | Path, n_samples: int = 2000,
               temperature: float = 1.0, max_panels: int = 12) -> Path:
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
    cols = max(len(fwd), len(inv))
    plt = _plt()
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 5.4), squeeze=False)
    start = fwd[0][1]
    import numpy as np

    colour = np.arctan2(start[:, 1] - start[:, 1].mean(), start[:, 0] - start[:, 0].mean())
    for row, panels, colours in ((0, fwd, colour), (1, inv, None)):
        for c in range(cols):
            ax = axes[row][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            name, p = panels[c]
            ax.scatter(p[:, 0], p[:, 1], s=1, c=colours if colours is not None else "C1",
                       cmap="hsv" if colours is not None else None, alpha=0.6)
            ax.set_title(name, fontsize=8)
            ax.set_aspect("equal", adjustable="datalim")
    axes[0][0].set_ylabel("data → latent")
    axes[1][0].set_ylabel("latent → data")
    return save_figure(fig, path, dpi=90)
