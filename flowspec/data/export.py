"""Samples of a flow written as data files: ``.csv``/``.tsv`` (header row), ``.npy``, ``.npz``.

Column names come from the training file when the run stored them (a ``file``
dataset pins its column and array names), so a sampled csv has the training csv's
header and can be read back with the same spec. For conditional flows the context
the samples were drawn for is written too: csv columns before the data's (named as
in the training file), an array next to the data in ``.npz``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspec.errors import FlowspecError

#: suffixes ``flowspec sample -o`` writes as data files rather than pictures
EXPORT_SUFFIXES = (".csv", ".tsv", ".npy", ".npz")
_CHUNK = 65536


def _file_params(flow: Any) -> dict[str, Any]:
    data = getattr(getattr(flow, "spec", None), "data", None) or {}
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and "file" in dataset:
        return dataset["file"] or {}
    return {}


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _numbered(stem: str, k: int) -> list[str]:
    return [stem] if k == 1 else [f"{stem}{i + 1}" for i in range(k)]


def feature_names(flow: Any) -> tuple[list[str], list[str]]:
    """``(data names, context names)``: the training file's, else ``x1..xD`` / ``c1..cK``
    (``class`` for class-conditional flows)."""
    params = _file_params(flow)
    d = int(np.prod(flow.input_shape))
    x_names = _listed(params.get("columns"))
    if len(x_names) != d:
        x_names = _numbered(params.get("array") or "x", d)
    if flow.context_shape is None:
        return x_names, []
    if flow.num_classes:
        return x_names, ["class"]
    k = int(np.prod(flow.context_shape))
    ctx = params.get("context")
    ctx_names = _listed(ctx)
    if len(ctx_names) != k:
        ctx_names = _numbered(ctx if isinstance(ctx, str) else "c", k)
    return x_names, ctx_names


def parse_context(flow: Any, values: Any) -> torch.Tensor | None:
    """A context for sampling: ``"0.5,1.0"`` or numbers -> a ``[K]`` tensor checked against
    ``model.context``; an integer class for class-conditional flows."""
    if values is None:
        return None
    if flow.context_shape is None:
        raise FlowspecError("--context was given, but this flow is not conditional")
    if isinstance(values, str):
        try:
            values = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise FlowspecError(f"--context: expected comma-separated numbers, got "
                                f"'{values}'") from None
    if flow.num_classes:
        raise FlowspecError("this flow is class-conditional: choose the class with --class K")
    ctx = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    k = int(np.prod(flow.context_shape))
    if ctx.numel() != k:
        _, names = feature_names(flow)
        raise FlowspecError(f"--context has {ctx.numel()} value(s), but the flow is conditional "
                            f"on {k} ({', '.join(names)})",
                            hint=f"e.g. --context {','.join(['0'] * k)}")
    return ctx.reshape(flow.context_shape)


def _context_for(flow: Any, n: int, context: Any, label: int | None) -> Any:
    if flow.context_shape is None:
        if label is not None:
            raise FlowspecError("--class was given, but this flow is not class-conditional")
        return None
    if flow.num_classes:
        if label is None:
            return torch.arange(n) % flow.num_classes
        if not 0 <= label < flow.num_classes:
            raise FlowspecError(f"--class {label} is out of range (0..{flow.num_classes - 1})")
        return torch.full((n,), label)
    if context is None:
        _, names = feature_names(flow)
        raise FlowspecError(f"this flow is conditional on {', '.join(names)}: give the "
                            "context to sample for",
                            hint=f"flowspec sample RUN --context {','.join(['0'] * len(names))}"
                                 " (Python: flow.sample(n, context=...))")
    return context


@torch.no_grad()
def sample_array(flow: Any, n: int, temperature: float = 1.0, context: Any = None,
                 label: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` samples (drawn in chunks) and the context of each row, as float arrays."""
    ctx = _context_for(flow, n, context, label)
    if ctx is not None:
        ctx = torch.as_tensor(ctx)
    xs, cs = [], []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        c = None
        if ctx is not None:  # labels [n] or per-row contexts are sliced; one vector repeated
            per_row = flow.num_classes or ctx.dim() > len(flow.context_shape)
            c = ctx[start:start + m] if per_row else ctx.expand(m, *flow.context_shape)
            cs.append(c.float().reshape(m, -1).cpu())
        xs.append(flow.sample(m, temperature=temperature, context=c).float().cpu())
    return torch.cat(xs).numpy(), (torch.cat(cs).numpy() if cs else None)


def write_samples(flow: Any, path: str | Path, n: int, temperature: float = 1.0,
                  context: Any = None, label: int | None = None) -> Path:
    """Draw ``n`` samples and write them to ``path`` (format from its suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise FlowspecError(f"{path}: cannot write samples as '{suffix}'",
                            hint="use " + ", ".join(EXPORT_SUFFIXES))
    if suffix in (".csv", ".tsv") and len(flow.input_shape) != 1:
        raise FlowspecError(f"{path}: a csv row holds a vector, but this flow's examples have "
                            f"shape {list(flow.input_shape)}", hint="write .npy or .npz")
    x, ctx = sample_array(flow, n, temperature, context, label)
    x = _on_lattice(flow, x)
    x_names, ctx_names = feature_names(flow)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        params = _file_params(flow)
        arrays = {params.get("array") or "x": x}
        if ctx is not None:
            ctx_key = params.get("context") if isinstance(params.get("context"), str) \
                else "context"
            arrays[ctx_key] = ctx
        np.savez(path, **arrays)
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        head = io.StringIO()
        csv.writer(head, delimiter=delimiter, lineterminator="").writerow(ctx_names + x_names)
        table = np.concatenate([ctx, x], axis=1) if ctx is not None else x
        np.savetxt(path, table, delimiter=delimiter, header=head.getvalue(), comments="",
                   fmt="%.9g")
    return path


def _on_lattice(flow: Any, x: np.ndarray) -> np.ndarray:
    """Samples of dequantized table columns back on their values (counts stay integers);
    needs the run's training data, whose values define the lattice."""
    steps = (getattr(flow.spec, "data", None) or {}).get("preprocess") or []
    if len(flow.input_shape) != 1 or not any("dequantize" in (s if isinstance(s, dict) else
                                                              {s: None}) for s in steps):
        return x
    import warnings

    from flowspec.data import open_spec_dataset
    from flowspec.errors import DataError

    try:
        _, prep = open_spec_dataset(flow.spec)
    except DataError as err:
        warnings.warn(f"dequantized columns are written as drawn (continuous), not on their "
                      f"values: the training data is not at hand ({err})", stacklevel=3)
        return x
    return prep.to_values(torch.from_numpy(x)).numpy()
