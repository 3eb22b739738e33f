"""Image grids as PNG files (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> one uint8 ``[H', W', C]`` mosaic, ``nrow`` images a row."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    canvas = torch.zeros(c, rows * (h + pad) + pad, nrow * (w + pad) + pad, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top:top + h, left:left + w] = images[i]
    return canvas.permute(1, 2, 0)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save uint8 images ``[N, C, H, W]`` (C = 1 or 3) as one PNG."""
    from PIL import Image

    grid = make_grid(images.detach().cpu(), nrow).numpy()
    if grid.shape[2] == 1:
        grid = grid[:, :, 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def save_rows(rows: list[torch.Tensor], path: str | Path) -> Path:
    """One row per batch (e.g. one temperature each), all rows the same length."""
    width = max(r.shape[0] for r in rows)
    return save_grid(torch.cat(rows, dim=0), path, nrow=width)
