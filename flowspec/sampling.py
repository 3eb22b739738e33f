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


def denoised_sample(flow: Flow, n: int, *, temperature: float, context: Any) -> torch.Tensor:
    """Samples, with the spec's denoising step (``sample.denoise``, TarFlow) if it asks."""
    from flowspec.denoise import sample

    return sample(flow, n, temperature=temperature, context=context)


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


#: samples per row of an image temperature grid when ``-n`` is not given
IMAGE_ROW = 8


def default_count(flow: Flow, temperatures: list[float]) -> int:
    """The spec's ``sample.n`` (per temperature); image rows of a temperature grid hold
    :data:`IMAGE_ROW` unless asked otherwise."""
    n = int(flow.spec.sample["n"])
    if len(flow.input_shape) == 3 and len(temperatures) > 1:
        return min(n, IMAGE_ROW)
    return n


def temperature_label(t: float) -> str:
    return f"T = {t:g}"


@torch.no_grad()
def sample_figure(
    flow: Flow,
    path: str | Path,
    *,
    n: int | None = None,
    temperatures: list[float] | None = None,
    data_dir: Any = None,
    label: int | None = None,
    npy: bool = False,
    context: Any = None,
) -> Path:
    """Images: a grid (one temperature) or one labelled row per temperature; 2-D data:
    one scatter panel per temperature next to the data and the learned density; energies:
    target, learned density and one sample histogram per temperature. ``n`` is per
    temperature (default: :func:`default_count`). ``npy`` saves raw arrays instead;
    ``path`` ending in .csv/.tsv/.npy/.npz writes the samples as a data file
    (:mod:`flowspec.data.export`). ``context``: one context vector (conditional flows).

    Non-finite samples are marked (images) or dropped (scatter plots), counted in the
    picture and reported as :class:`~flowspec.viz.notes.SampleWarning` lines."""
    path = Path(path)
    temps = temperatures or [flow.spec.sample["temperature"]]
    n = n if n is not None else default_count(flow, temps)
    if n < 1:
        raise FlowspecError(f"-n {n}: need at least one sample")
    from flowspec.data.export import EXPORT_SUFFIXES, write_samples

    if path.suffix.lower() in EXPORT_SUFFIXES and not npy:
        if len(temps) > 1:
            raise FlowspecError("--temps draws a picture; a data file takes one --temp")
        return write_samples(flow, path, n, temps[0], context=context, label=label)
    if npy:
        ctx = _class_context(flow, n, label)
        arrays = torch.stack([denoised_sample(flow, n, temperature=t, context=ctx).cpu()
                              for t in temps])
        import numpy as np

        np.save(path.with_suffix(".npy"), arrays.squeeze(0).numpy())
        return path.with_suffix(".npy")
    from flowspec.viz.notes import run_title

    title = run_title(flow)
    from flowspec.objectives import objective_class

    energy = objective_class(flow.spec).target_energy(flow.spec)
    if energy is not None:  # a flow fitted to an energy is drawn next to it
        from flowspec.viz.energy import plot_energy_comparison

        return plot_energy_comparison(flow, energy, path, n_samples=n, temperatures=temps,
                                      title=title)
    try:
        source, prep = _data(flow, data_dir)
    except DataError:
        if len(flow.input_shape) != 3:
            raise
        source, prep = None, None
    test = None
    if source is not None and not getattr(source, "discrete", False):
        test = source.load("test")
    return draw_samples(flow, source, prep, path, n, temps, data=test, context=context,
                        label=label, title=title)


@torch.no_grad()
def draw_samples(flow: Flow, source: Any, prep: Any, path: str | Path, n: int,
                 temperatures: float | list[float], data: Any = None, context: Any = None,
                 label: int | None = None, title: str | None = None) -> Path:
    """Images -> PNG grid (one labelled row per temperature when there are several);
    2-D points -> one scatter panel per temperature next to the data and the density.
    (The training loop draws its epoch pictures through this too.)

    A flow conditional on a context vector shows one ``p(x | c)``: samples and density
    for ``context`` (one vector), by default the first context of ``data``; the data
    panel is left out, since the data's points belong to other contexts.
    """
    from flowspec.viz.notes import run_title

    temps = [temperatures] if isinstance(temperatures, (int, float)) else list(temperatures)
    title = run_title(flow) if title is None else title
    vector_context = flow.context_shape is not None and not flow.num_classes
    if vector_context and context is None:
        if data is None or getattr(data, "context", None) is None:
            raise DataError("this flow is conditional: give a context to sample for",
                            hint="flowspec sample RUN --context v1,v2,...")
        context = data.context[0]
    if len(flow.input_shape) == 3:
        return _image_grid(flow, prep, Path(path), n, temps, context, label, title)
    if len(flow.input_shape) != 1:
        raise DataError(f"cannot draw samples of shape {list(flow.input_shape)}",
                        hint="write them to a file instead: flowspec sample RUN -o samples.csv")
    from flowspec.viz.points import plot_samples_2d

    names = _column_names(source)
    dev = flow.reference_tensor().device
    samples = {}
    for t in temps:
        ctx = context if context is not None else _class_context(flow, n, label)
        samples[t] = denoised_sample(flow, n, temperature=t, context=ctx)
    if vector_context:
        c = torch.as_tensor(context).reshape(-1).tolist()
        title += f" · p(x | c = [{', '.join(f'{v:.3g}' for v in c)}])"
    ref = None
    if data is not None and not vector_context:  # data rows belong to other contexts
        ref = data.x[:4000].to(dev)
        ref = prep.deterministic(ref) if hasattr(prep, "deterministic") else ref
    period = _periodic(source)
    if period is not None and tuple(flow.input_shape) == (2,) and not vector_context:
        from flowspec.viz.torus import plot_torus  # angles: drawn on the periodic domain

        return plot_torus(flow, samples, path, data=ref, title=title, period=period)
    if tuple(flow.input_shape) != (2,):  # a table of 1 or more than 2 columns: corner plot
        from flowspec.viz.pairs import plot_pairs

        t = temps[0]
        note = f" · T = {t:g}" + (f" (of {len(temps)} temperatures: the first)"
                                  if len(temps) > 1 else "")
        return plot_pairs(samples[t], path, data=ref, names=names, title=title + note)
    if vector_context:
        return plot_samples_2d(_WithContext(flow, context), samples, path, title=title,
                               names=names)
    return plot_samples_2d(flow, samples, path, data=ref, title=title, names=names)


def data_column_names(flow: Flow, data_dir: Any = None) -> list[str] | None:
    """The column names of the data a flow was trained on (csv files), for axis labels;
    None when the data has none or is not at hand."""
    from flowspec.data import open_spec_dataset

    try:
        source, _ = open_spec_dataset(flow.spec, data_dir)
    except FlowspecError:
        return None
    return _column_names(source)


def _periodic(source: Any) -> tuple[float, float] | None:
    """``(low, high)`` when the dataset's two coordinates are angles (the torus toy)."""
    while source is not None:
        period = getattr(source, "periodic", None)
        if period is not None:
            return tuple(period)  # type: ignore[return-value]
        source = getattr(source, "source", None)
    return None


def _column_names(source: Any) -> list[str] | None:
    """The data's column names (csv files), for axis labels."""
    names = getattr(source, "feature_names", None)
    if not callable(names):
        return None
    try:
        return names()[0]
    except FlowspecError:
        return None


class _WithContext:
    """A conditional flow with its context bound, for pictures of one ``p(x | c)``."""

    def __init__(self, flow: Flow, context: torch.Tensor):
        self.flow, self.context = flow, context

    def log_prob(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        return self.flow.log_prob(x, self.context)

    def reference_tensor(self) -> torch.Tensor:
        return self.flow.reference_tensor()


def _image_grid(flow: Flow, prep: Any, path: Path, n: int, temps: list[float], context: Any,
                label: int | None, title: str) -> Path:
    from flowspec.viz.grid import save_grid, save_rows
    from flowspec.viz.notes import nonfinite_rows, nonfinite_text, warn_nonfinite

    def to_img(x):
        return prep.to_images(x) if prep is not None else (x.clamp(0, 1) * 255).byte()

    rows, bad = [], []
    for t in temps:
        ctx = context if context is not None else _class_context(flow, n, label)
        x = denoised_sample(flow, n, temperature=t, context=ctx)
        bad.append(nonfinite_rows(x).cpu())
        rows.append(to_img(torch.nan_to_num(x, nan=0.0)).cpu())
    n_bad, total = int(sum(int(b.sum()) for b in bad)), n * len(temps)
    warn_nonfinite(n_bad, total, "marked red")
    if n_bad:
        title += f" · {nonfinite_text(n_bad, total, 'red, crossed')}"
    if len(temps) == 1:
        return save_grid(rows[0], path, title=f"{title} · {temperature_label(temps[0])}",
                         bad=bad[0])
    return save_rows(rows, path, labels=[temperature_label(t) for t in temps], title=title,
                     bad=bad)


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
    from flowspec.viz.notes import run_title

    source, prep = _data(flow, data_dir)
    if not source.discrete:
        raise DataError("interpolate draws images; this flow's data are not images")
    test = source.load("test")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(test.x.shape[0], generator=gen)[: 2 * pairs]
    dev = flow.reference_tensor().device
    x = prep.deterministic(test.x[idx].to(dev))
    y = test.y[idx].to(dev) if test.y is not None else None
    z = _latent_batch(flow, x, y)
    alphas = torch.linspace(0, 1, steps, device=dev, dtype=z.dtype)
    rows, bad = [], []
    for p in range(pairs):
        za, zb = z[2 * p], z[2 * p + 1]
        zs = za[None] + alphas[:, None] * (zb - za)[None]
        ctx = y[2 * p].expand(steps) if (y is not None and flow.num_classes) else None
        _decoded_row(flow, prep, flow.decode(flow.unflatten_latents(zs), ctx), rows, bad)
    title = f"{run_title(flow)} · latent interpolation, {steps} steps between test images"
    return save_rows(rows, path, title=_with_bad(title, bad), bad=bad)


def _decoded_row(flow: Flow, prep: Any, x: torch.Tensor, rows: list, bad: list) -> None:
    """Append one row of decoded images, noting which were not finite."""
    from flowspec.viz.notes import nonfinite_rows

    bad.append(nonfinite_rows(x).cpu())
    rows.append(prep.to_images(torch.nan_to_num(x, nan=0.0)).cpu())


def _with_bad(title: str, bad: list[torch.Tensor]) -> str:
    """The title, plus the count of non-finite images (also warned about)."""
    from flowspec.viz.notes import nonfinite_text, warn_nonfinite

    n_bad, total = sum(int(b.sum()) for b in bad), sum(int(b.numel()) for b in bad)
    warn_nonfinite(n_bad, total, "marked red")
    return f"{title} · {nonfinite_text(n_bad, total, 'red, crossed')}" if n_bad else title


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
    dev = flow.reference_tensor().device
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
    from flowspec.viz.notes import run_title

    source, prep = _data(flow, data_dir)
    direction = attribute_direction(flow, source, prep, attr)
    dev = flow.reference_tensor().device
    if image is not None:
        from flowspec.data import load_image_as

        x_raw = load_image_as(image, source.shape)[None]
    else:
        test = source.load("test")
        gen = torch.Generator().manual_seed(seed)
        x_raw = test.x[torch.randperm(test.x.shape[0], generator=gen)[:n_images]]
    x = prep.deterministic(x_raw.to(dev))
    z = _latent_batch(flow, x, None)
    rows, bad = [], []
    for zi in z:
        zs = torch.stack([zi + a * direction.to(dev) for a in alphas])
        _decoded_row(flow, prep, flow.decode(flow.unflatten_latents(zs)), rows, bad)
    title = (f"{run_title(flow)} · '{attr}' direction, columns α = "
             + ", ".join(f"{a:g}" for a in alphas))
    return save_rows(rows, path, title=_with_bad(title, bad), bad=bad)
