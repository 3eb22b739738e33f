"""Image grids as PNG files (Pillow): labelled rows, upscaled tiles, marked failures.

A grid is rows of tiles on a white background: thin white separators between
tiles, an optional label at the left of each row (``T = 0.7``), an optional title
above (the run, its step and NLL), and small tiles (MNIST's 28 px, CIFAR's 32 px)
scaled up by an integer factor, nearest-neighbour, to at least ``min_tile`` pixels
so that they can be seen. A tile whose sample was not finite is drawn red with a
white cross — never black, which would pass for a dark sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
BAD_FILL = (205, 30, 30)
BAD_CROSS = (255, 255, 255)


def font(size: int) -> Any:
    """Pillow's default font at ``size`` px (a scalable font since Pillow 10.1; the fixed
    bitmap font before)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_size(draw: Any, text: str, fnt: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
    return right - left, bottom - top


def _wrap(draw: Any, text: str, fnt: Any, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _text_size(draw, trial, fnt)[0] > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def upscale_factor(h: int, w: int, min_tile: int) -> int:
    """The integer factor that brings the tile's longer side to at least ``min_tile``."""
    return max(1, math.ceil(min_tile / max(h, w)))


def grid_image(rows: list[torch.Tensor], *, labels: list[str] | None = None,
               title: str | None = None, bad: list[torch.Tensor] | None = None,
               min_tile: int = 64, sep: int = 2, font_size: int = 14) -> Any:
    """Rows of uint8 images ``[N_i, C, H, W]`` (C = 1 or 3) -> one RGB ``PIL.Image``.

    ``labels``: one per row, drawn at its left; ``title``: wrapped above the grid;
    ``bad``: per row, bool ``[N_i]`` of tiles to mark as non-finite."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("no images to draw")
    _, c, h, w = rows[0].shape
    k = upscale_factor(h, w, min_tile)
    th, tw = h * k, w * k
    ncols = max(r.shape[0] for r in rows)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    fnt, title_fnt = font(font_size), font(font_size + 2)
    pad = max(6, font_size // 2)
    label_w = 0
    if labels:
        label_w = max(_text_size(scratch, t, fnt)[0] for t in labels) + 2 * pad
    grid_w = ncols * (tw + sep) + sep
    width = label_w + grid_w
    title_lines = _wrap(scratch, title, title_fnt, width - 2 * pad) if title else []
    line_h = _text_size(scratch, "Ag", title_fnt)[1] + 4
    title_h = len(title_lines) * line_h + 2 * pad if title_lines else 0
    height = title_h + len(rows) * (th + sep) + sep
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((pad, pad + i * line_h), line, fill=TEXT, font=title_fnt)
    for r, images in enumerate(rows):
        top = title_h + sep + r * (th + sep)
        if labels:
            lw, lh = _text_size(draw, labels[r], fnt)
            draw.text((label_w - pad - lw, top + (th - lh) // 2), labels[r], fill=TEXT, font=fnt)
        tiles = images.detach().cpu()
        if k > 1:
            tiles = tiles.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
        if c == 1:
            tiles = tiles.expand(-1, 3, -1, -1)
        marks = bad[r] if bad is not None else None
        for j in range(tiles.shape[0]):
            left = label_w + sep + j * (tw + sep)
            if marks is not None and bool(marks[j]):
                _mark_bad(draw, left, top, tw, th)
            else:
                tile = Image.fromarray(tiles[j].permute(1, 2, 0).contiguous().numpy())
                canvas.paste(tile, (left, top))
    return canvas


def _mark_bad(draw: Any, left: int, top: int, w: int, h: int) -> None:
    draw.rectangle((left, top, left + w - 1, top + h - 1), fill=BAD_FILL)
    m, lw = max(3, w // 6), max(2, w // 20)
    draw.line((left + m, top + m, left + w - 1 - m, top + h - 1 - m), fill=BAD_CROSS, width=lw)
    draw.line((left + m, top + h - 1 - m, left + w - 1 - m, top + m), fill=BAD_CROSS, width=lw)


def _save(image: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, *,
              title: str | None = None, bad: torch.Tensor | None = None,
              min_tile: int = 64) -> Path:
    """Save uint8 images ``[N, C, H, W]`` as one PNG, ``nrow`` a row (default: square)."""
    n = images.shape[0]
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = [images[i:i + nrow] for i in range(0, n, nrow)]
    marks = [bad[i:i + nrow] for i in range(0, n, nrow)] if bad is not None else None
    return _save(grid_image(rows, title=title, bad=marks, min_tile=min_tile), path)


def save_rows(rows: list[torch.Tensor], path: str | Path, *, labels: list[str] | None = None,
              title: str | None = None, bad: list[torch.Tensor] | None = None,
              min_tile: int = 64) -> Path:
    """One row per batch (e.g. one temperature each, labelled ``T = 0.7``)."""
    return _save(grid_image(rows, labels=labels, title=title, bad=bad, min_tile=min_tile), path)
