"""Pictures from trained flows: samples, temperature grids, interpolations, attribute edits.

All of them go through :class:`~flowspec.compile.Flow`'s own walks; nothing here
knows about any particular architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowspec.compile import Flow
from flowspec.errors import DataError, FlowspecError


def _data(flow: Flow, data_dir: Any):
    from flowspec.data import open_spec_dataset

    return open_spec_dataset(flow.spec, data_dir)


def _class_context(flow: Flow, n: int, label: int | None):
    if flow.num_classes is None:
        if label is not None:
            raise FlowspecError("--class was given, but this flow is not class-conditional")
        return None
    if label is None:
        return torch.arange(n) % flow.num_classes
    if not 0 <= label < flow.num_classes:
        raise FlowspecError(f"--class {label} is out of range (0..{flow.num_classes - 1})")
    return torch.full((n,), label)


@torch.no_grad()
def sample_figure(
    flow: Flow,
    path: str | Path,
    *,
    n: int = 64,
    temperatures: list[float] | None = None,
    data_dir: Any = None,
    label: int | None = None,
    npy: bool = False,
    context: Any = None,
) -> Path:
    """One temperature: a grid (images) or scatter+density (2-D) or energy comparison;
    several temperatures: one row per temperature. ``npy`` saves raw arrays instead;
    ``path`` ending in .csv/.tsv/.npy/.npz writes the samples as a data file
    (:mod:`flowspec.data.export`). ``context``: one context vector (conditional flows)."""
    path = Path(path)
    temps = temperatures or [flow.spec.sample["temperature"]]
    from flowspec.data.export import EXPORT_SUFFIXES, write_samples

    if path.suffix.lower() in EXPORT_SUFFIXES and not npy:
        if len(temps) > 1:
            raise FlowspecError("--temps draws a picture; a data file takes one --temp")
        return write_samples(flow, path, n, temps[0], context=context, label=label)
    if npy:
        ctx = _class_context(flow, n, label)
        arrays = torch.stack([flow.sample(n, temperature=t, context=ctx).cpu() for t in temps])
        import numpy as np

        np.save(path.with_suffix(".npy"), arrays.squeeze(0).numpy())
        return path.with_suffix(".npy")
    if flow.spec.train["objective"] == "reverse_kl":
        from flowspec.energies import build_energy
        from flowspec.viz.energy import plot_energy_comparison

        return plot_energy_comparison(flow, build_energy(flow.spec.train["target"]), path)
    try:
        source, prep = _data(flow, data_dir)
    except DataError:
        if len(flow.input_shape) != 3:
            raise
        source, prep = None, None
    if len(flow.input_shape) == 3:
        from flowspec.viz.grid import save_grid, save_rows

        def to_img(x):
            return prep.to_images(x) if prep is not None else (x.clamp(0, 1) * 255).byte()

        if len(temps) == 1:
            ctx = _class_context(flow, n, label)
            return save_grid(to_img(flow.sample(n, temperature=temps[0], context=ctx)), path)
        per_row = min(n, 8)
        ctx = _class_context(flow, per_row, label)
        return save_rows([to_img(flow.sample(per_row, temperature=t, context=ctx))
                          for t in temps], path)
    from flowspec.train.objectives import draw_samples

    test = source.load("test") if source is not None else None
    return draw_samples(flow, source, prep, path, n, temps[0], data=test,
                        context=context if context is not None else _class_context(flow, n, label))


def _latent_batch(flow: Flow, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    ctx = y if flow.num_classes else None
    return flow.flatten_latents(flow.encode(x, ctx))


@torch.no_grad()
def interpolate_figure(
    flow: Flow, path: str | Path, *, data_dir: Any = None, pairs: int = 4, steps: int = 8,
    seed: int = 0,
) -> Path:
    """Rows of linear latent interpolations between random test-image pairs."""
    from flowspec.viz.grid import save_rows

    source, prep = _data(flow, data_dir)
    if not source.discrete:
        raise DataError("interpolate draws images; this flow's data are not images")
    test = source.load("test")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(test.x.shape[0], generator=gen)[: 2 * pairs]
    dev = flow._reference_tensor().device
    x = prep.deterministic(test.x[idx].to(dev))
    y = test.y[idx].to(dev) if test.y is not None else None
    z = _latent_batch(flow, x, y)
    alphas = torch.linspace(0, 1, steps, device=dev, dtype=z.dtype)
    rows = []
    for p in range(pairs):
        za, zb = z[2 * p], z[2 * p + 1]
        zs = za[None] + alphas[:, None] * (zb - za)[None]
        ctx = y[2 * p].expand(steps) if (y is not None and flow.num_classes) else None
        rows.append(prep.to_images(flow.decode(flow.unflatten_latents(zs), ctx)))
    return save_rows(rows, path)


@torch.no_grad()
def attribute_direction(flow: Flow, source: Any, prep: Any, attr: str,
                        max_examples: int = 20_000, batch: int = 256) -> torch.Tensor:
    """Mean latent of training examples with the attribute minus the mean of those without."""
    names = source.attribute_names or []
    if attr not in names:
        from flowspec.registry import did_you_mean

        sug = did_you_mean(attr, names)
        known = f"known: {', '.join(names)}" if names else "this dataset has no attributes"
        raise DataError(f"unknown attribute '{attr}'",
                        hint=f"did you mean '{sug[0]}'?" if sug else known)
    train = source.load("train")
    col = names.index(attr)
    flags = train.attrs[:max_examples, col] > 0
    dev = flow._reference_tensor().device
    sums = {True: None, False: None}
    counts = {True: 0, False: 0}
    for start in range(0, flags.shape[0], batch):
        xb = prep.deterministic(train.x[start:start + batch].to(dev))
        yb = train.y[start:start + batch].to(dev) if train.y is not None else None
        z = _latent_batch(flow, xb, yb).double()
        f = flags[start:start + batch].to(dev)
        for key, mask in ((True, f), (False, ~f)):
            if mask.any():
                s = z[mask].sum(0)
                sums[key] = s if sums[key] is None else sums[key] + s
                counts[key] += int(mask.sum())
    if not counts[True] or not counts[False]:
        raise DataError(f"attribute '{attr}' needs both positive and negative training examples")
    return (sums[True] / counts[True] - sums[False] / counts[False]).float()


@torch.no_grad()
def manipulate_figure(
    flow: Flow, path: str | Path, *, attr: str, alphas: list[float], data_dir: Any = None,
    image: str | Path | None = None, n_images: int = 4, seed: int = 0,
) -> Path:
    """Rows: an image moved along an attribute direction by each alpha (Glow, section 5)."""
    from flowspec.viz.grid import save_rows

    source, prep = _data(flow, data_dir)
    direction = attribute_direction(flow, source, prep, attr)
    dev = flow._reference_tensor().device
    if image is not None:
        from flowspec.data import load_image_as

        x_raw = load_image_as(image, source.shape)[None]
    else:
        test = source.load("test")
        gen = torch.Generator().manual_seed(seed)
        x_raw = test.x[torch.randperm(test.x.shape[0], generator=gen)[:n_images]]
    x = prep.deterministic(x_raw.to(dev))
    z = _latent_batch(flow, x, None)
    rows = []
    for zi in z:
        zs = torch.stack([zi + a * direction.to(dev) for a in alphas])
        rows.append(prep.to_images(flow.decode(flow.unflatten_latents(zs))))
    return save_rows(rows, path)
