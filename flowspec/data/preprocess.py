"""Preprocessing: raw dataset tensors -> the model's input, with the density accounted.

Only steps whose effect on reported likelihoods is exact and documented exist here.
Transforms with a log-det (logit with alpha, affine standardisation) are *nodes of
the flow*, so ``Flow.log_prob`` includes them; they are not preprocessing.

**Discrete data** (8-bit images, uint8 0..255) always goes through one fixed
pipeline, whatever order the steps are listed in; the steps only configure it:

1. ``n_bits: n`` -- keep the top ``n`` bits: ``x_n = floor(x / 2**(8-n))`` in
   ``0 .. 2**n - 1`` (default: ``n = 8``, no reduction).
2. ``pad: {to: [H, W]}`` -- zero-pad, centred (MNIST 28 -> 32). The padded pixels
   are data like any other: they are dequantized and counted in ``D``.
3. ``dequantize: uniform`` (default) -- ``y = (x_n + u) / 2**n`` with fresh
   ``u ~ U[0, 1)^D`` per call; ``dequantize: none`` uses the bin centres ``u = 1/2``;
   ``dequantize: variational`` passes the bin centres to a flow whose
   ``model.dequantize`` draws ``u ~ q(u | x_n)`` (Flow++, :mod:`flowspec.dequantize`):
   its ``log_prob`` is then ``log p(y) - log q(u | x_n)``, so the same bits/dim
   formula gives the variational bound (a tighter one, since q is learned).
4. ``scale`` -- division by ``2**n`` into ``[0, 1]`` as in 3; always done for
   discrete data, listing it only makes that explicit.

The flow models a density ``p`` of ``y`` on ``[0, 1]^D`` and training reports
``nll = -log p(y)`` in nats per example on that scale. Relation to the discrete data
(``D`` = dims after padding): ``-log P(x_n) <= E_u[nll] + D·n·ln 2`` with uniform
dequantization (Theis et al. 2016), so the reported ``bits_per_dim`` of
:func:`flowspec.metrics.bits_per_dim`, ``(nll + D·n·ln 2) / (D·ln 2)``, is an upper
bound on the discrete code length of the ``n``-bit data in bits per dim. With
``dequantize: none`` the number is not a bound (a continuous density on bin centres
can be made arbitrarily large); it is for visualisation and ablations only. The
n-bit reduction changes *what* data is modelled (``n``-bit, not 8-bit images), so
bits/dim at ``n < 8`` is compared only with results at the same ``n``.

**Continuous data** (2-D toys) goes to the model unchanged (float32); every step here
is refused for it, since each would change the density without a log-det -- except
``dequantize`` on a table read from a file (:mod:`flowspec.data.files`), whose
integer-valued or few-valued columns (:mod:`flowspec.data.columns`) it spreads
uniformly over their bins: ``y_j = x_j + w_j·u`` with ``u ~ U[0, 1)`` and bin width
``w_j`` (1 for integers; declared with ``bin_width`` or ``levels``). Then
``-log P(x) <= E_u[nll] - Σ_j log w_j``: with unit bins the reported NLL in nats is
itself an upper bound on the discrete columns' code length (in the other columns'
units of density).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from flowspec.data.base import PREPROCESS, DataSource, check_params
from flowspec.errors import DataError, Problem, SpecError, UnknownNameError
from flowspec.registry import params_schema

SOURCE_BITS = 8  # every discrete source here is uint8


class Pipeline:
    """The settings the steps write; :class:`Preprocessing` runs them in a fixed order."""

    def __init__(self) -> None:
        self.n_bits: int | None = None
        self.dequantize: str | None = None
        #: tables only: which columns, their bin widths or levels (see :func:`dequantize`)
        self.deq_columns: list[str | int] | None = None
        self.bin_width: float | dict[str, float] | None = None
        self.levels: dict[str, list[float]] | None = None
        self.pad_to: tuple[int, int] | None = None
        self.scale = False


_WIDTH = {"type": "number", "exclusiveMinimum": 0}


@PREPROCESS.register(
    "dequantize",
    schema=params_schema(
        kind={"enum": ["uniform", "variational", "none"], "default": "uniform",
              "description": "uniform noise in each bin; variational: bin centres, the "
                             "noise drawn by the model's learned q(u | x) "
                             "(model.dequantize); none: bin centres, no bound"},
        columns={"anyOf": [{"type": "array", "items": {"type": ["string", "integer"]},
                            "minItems": 1}, {"type": "null"}], "default": None,
                 "description": "tables: the columns (names, or feature indices of arrays) "
                                "to dequantize (default: every integer-valued or few-valued "
                                "column)"},
        bin_width={"anyOf": [_WIDTH, {"type": "object", "additionalProperties": _WIDTH},
                             {"type": "null"}], "default": None,
                   "description": "tables: the width of each value's bin, one number or "
                                  "{column: width} (default: 1 for integers, else the "
                                  "smallest gap between the column's values)"},
        levels={"anyOf": [{"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "number"}, "minItems": 2}}, {"type": "null"}],
            "default": None,
            "description": "tables: {column: [equally spaced values it can take]}; the "
                           "spacing is the bin width and other values are refused"}),
    shorthand="kind",
    examples=[{"params": {"kind": "uniform"}},
              {"params": {"columns": ["visits"], "bin_width": 1}}],
)
def dequantize(cfg: Pipeline, *, kind: str = "uniform",
               columns: list[str | int] | None = None,
               bin_width: float | dict[str, float] | None = None,
               levels: dict[str, list[float]] | None = None) -> None:
    """Spread each discrete value uniformly over its bin, so a density is a bound on the
    discrete likelihood ('none': bin centres, no bound). Images: 8-bit pixels; tables
    read from files: integer or few-valued columns."""
    cfg.dequantize = kind
    cfg.deq_columns, cfg.bin_width, cfg.levels = columns, bin_width, levels


@PREPROCESS.register(
    "n_bits",
    schema=params_schema(bits={"type": "integer", "minimum": 1, "maximum": SOURCE_BITS,
                               "default": 5, "description": "bits kept per value"}),
    shorthand="bits",
    examples=[{"params": {"bits": 5}}],
)
def n_bits(cfg: Pipeline, *, bits: int = 5) -> None:
    """Keep the top bits of 8-bit data (floor(x / 2**(8-n))), as Glow does for 5-bit
    CelebA: fewer levels, easier data; bits/dim is then over n-bit values."""
    cfg.n_bits = bits


@PREPROCESS.register("scale", schema=params_schema(), examples=[{"params": {}}])
def scale(cfg: Pipeline) -> None:
    """Divide by 2**n_bits into [0, 1]; implied for discrete data (listed for clarity),
    refused for continuous data, where it would change the density unaccounted."""
    cfg.scale = True


@PREPROCESS.register(
    "pad",
    schema=params_schema(
        to={"oneOf": [{"type": "integer", "minimum": 1},
                      {"type": "array", "items": {"type": "integer", "minimum": 1},
                       "minItems": 2, "maxItems": 2}],
            "default": [32, 32], "description": "target height and width (or one size)"}),
    shorthand="to",
    examples=[{"params": {"to": [32, 32]}}],
)
def pad(cfg: Pipeline, *, to: int | list[int] = [32, 32]) -> None:  # noqa: B006 (read only)
    """Zero-pad images, centred, to a size the multi-scale architectures divide
    (MNIST 28 -> 32); padded pixels count as data dimensions."""
    size = [to, to] if isinstance(to, int) else list(to)
    cfg.pad_to = (int(size[0]), int(size[1]))



def parse_step(item: Any, path: str) -> tuple[str, dict[str, Any]]:
    """``name`` | ``{name: scalar}`` (shorthand) | ``{name: {params}}`` -> (name, params)."""
    if isinstance(item, str):
        name, value = item, None
    elif isinstance(item, dict) and len(item) == 1:
        (name, value), = item.items()
        name = str(name)
    else:
        raise SpecError(Problem(f"expected a step name or a one-key mapping, got {item!r}", path,
                                hint="e.g. dequantize, {n_bits: 5} or {pad: {to: [32, 32]}}"))
    try:
        entry = PREPROCESS.get(name)
    except UnknownNameError as err:
        raise SpecError(Problem(err.message, path)) from None
    if value is None:
        params: dict[str, Any] = {}
    elif isinstance(value, dict):
        params = dict(value)
    elif "shorthand" in entry.extra:
        params = {entry.extra["shorthand"]: value}
    else:
        raise SpecError(Problem(f"'{name}' takes no value, got {value!r}", path,
                                hint=f"write just `{name}`"))
    check_params(entry, params, f"{path}.{name}")
    return name, entry.with_defaults(params)


class Preprocessing:
    """The data pipeline of one spec: raw batches -> float model input, and back to images.

    ``n_bits`` is the bit depth of the modelled discrete data (8 unless reduced), or
    ``None`` for continuous data; ``in_shape``/``out_shape`` are per example.
    """

    def __init__(self, steps: list[Any] | None, source: DataSource,
                 path: str = "data.preprocess"):
        cfg = Pipeline()
        seen: set[str] = set()
        self.steps: list[tuple[str, dict[str, Any]]] = []
        for i, item in enumerate(steps or []):
            name, params = parse_step(item, f"{path}[{i}]")
            if name in seen:
                raise SpecError(Problem(f"'{name}' is listed twice", f"{path}[{i}]"))
            seen.add(name)
            PREPROCESS.get(name).obj(cfg, **params)
            self.steps.append((name, copy.deepcopy(params)))
        self.discrete = bool(source.discrete)
        self.in_shape = tuple(int(s) for s in source.shape)
        #: lines to say at the start of a run (discrete columns, dequantization units)
        self.notes: list[str] = []
        #: tables: per-feature bin widths of dequantized columns (0: left continuous)
        self.widths: torch.Tensor | None = None
        if not self.discrete and len(self.in_shape) == 1 and hasattr(source, "feature_names"):
            from flowspec.data.tabular_dequant import table_dequantization

            if self.steps and any(name != "dequantize" for name, _ in self.steps):
                name = next(n for n, _ in self.steps if n != "dequantize")
                raise DataError(f"{path}: '{name}' applies to discrete (8-bit image) data; a "
                                "table takes only `dequantize`",
                                hint="remove it; to rescale a column add a `standardize` or "
                                     "affine node to the flow, so its log-det is counted")
            if cfg.dequantize == "variational":
                raise DataError(f"{path}: dequantize: variational applies to 8-bit images; "
                                "a table's columns are dequantized uniformly",
                                hint="use dequantize: uniform (or list the columns)")
            self.widths, self.notes = table_dequantization(
                source, cfg if self.steps else None, path)
            if self.widths is not None:
                from flowspec.data.tabular_dequant import lattice_offsets

                self.offsets = lattice_offsets(source.load("train").x, self.widths)
            self.dequantize = (cfg.dequantize or "uniform") if self.widths is not None else "none"
            self.n_bits = None
            self.padding = (0, 0, 0, 0)
            self.out_shape = self.in_shape
            return
        if not self.discrete:
            if self.steps:
                name = self.steps[0][0]
                raise DataError(
                    f"{path}: '{name}' applies to discrete (8-bit image) data, but this dataset "
                    "is continuous",
                    hint="remove it; to rescale continuous data add an affine node to the flow, "
                         "so its log-det is counted")
            self.n_bits: int | None = None
            self.dequantize = "none"
            self.padding = (0, 0, 0, 0)
            self.out_shape = self.in_shape
            return
        if len(self.in_shape) != 3:
            raise DataError("discrete data must be images [C, H, W], "
                            f"got shape {list(self.in_shape)}")
        if cfg.deq_columns is not None or cfg.bin_width is not None or cfg.levels is not None:
            raise DataError(f"{path}: dequantize's columns/bin_width/levels apply to tables; "
                            "8-bit images are dequantized per pixel",
                            hint="write just `dequantize` (or {n_bits: n} for fewer levels)")
        self.n_bits = cfg.n_bits or SOURCE_BITS
        self.dequantize = cfg.dequantize or "uniform"
        c, h, w = self.in_shape
        self.padding = (0, 0, 0, 0)
        if cfg.pad_to is not None:
            th, tw = cfg.pad_to
            if th < h or tw < w:
                raise DataError(f"{path}: pad to {[th, tw]} is smaller than the images "
                                f"({[h, w]})", hint="pad only grows images; use a larger size")
            top, left = (th - h) // 2, (tw - w) // 2
            self.padding = (left, tw - w - left, top, th - h - top)  # F.pad order: W then H
            h, w = th, tw
        self.out_shape = (c, h, w)

    @property
    def levels(self) -> int:
        return 2 ** (self.n_bits or SOURCE_BITS)

    def _check(self, x_raw: torch.Tensor) -> None:
        if tuple(x_raw.shape[1:]) != self.in_shape:
            raise DataError(f"expected a batch of examples of shape {list(self.in_shape)}, "
                            f"got {list(x_raw.shape)}")
        if self.discrete and x_raw.dtype != torch.uint8:
            raise DataError(f"discrete data must be uint8, got {x_raw.dtype}")

    def _bins(self, x_raw: torch.Tensor) -> torch.Tensor:
        """uint8 -> float n-bit integers, padded."""
        x = x_raw.float()
        if self.n_bits != SOURCE_BITS:
            x = torch.floor(x / 2 ** (SOURCE_BITS - self.n_bits))
        if any(self.padding):
            x = F.pad(x, self.padding)
        return x

    def __call__(self, x_raw: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """A batch of raw examples -> model input; fresh dequantization noise per call."""
        self._check(x_raw)
        if not self.discrete:
            return self._table_noise(x_raw.float(), generator)
        x = self._bins(x_raw)
        # variational: the bin centres; the flow's dequantizer recovers the bin from them
        # (floor(y·levels), far from any bin edge) and draws u ~ q(u | x) itself
        if self.dequantize == "uniform":
            gen_dev = generator.device if generator is not None else x.device
            u = torch.rand(x.shape, generator=generator, device=gen_dev, dtype=x.dtype)
            x = x + u.to(x.device)
        else:
            x = x + 0.5
        return x / self.levels

    def deterministic(self, x_raw: torch.Tensor) -> torch.Tensor:
        """The same without noise: bin centres (continuous data: unchanged)."""
        self._check(x_raw)
        if not self.discrete:
            return self._table_noise(x_raw.float(), None, centres=True)
        return (self._bins(x_raw) + 0.5) / self.levels

    def _table_noise(self, x: torch.Tensor, generator: torch.Generator | None,
                     centres: bool = False) -> torch.Tensor:
        """Dequantized table columns: ``x + w·u`` (``u = 1/2`` for bin centres)."""
        if self.widths is None:
            return x
        w = self.widths.to(x.device, x.dtype)
        if centres or self.dequantize == "none":
            return x + 0.5 * w
        gen_dev = generator.device if generator is not None else x.device
        u = torch.rand(x.shape, generator=generator, device=gen_dev, dtype=x.dtype)
        return x + u.to(x.device) * w

    def to_values(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space samples of a table -> data values: dequantized columns back on their
        lattice (the bin each sample fell in), the others unchanged."""
        if self.widths is None:
            return x
        w = self.widths.to(x.device, x.dtype)
        off = self.offsets.to(x.device, x.dtype)
        on = off + torch.floor((x - off) / torch.where(w > 0, w, 1.0)) * w
        return torch.where(w > 0, on, x)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> uint8 ``[N, C, H, W]``: clamp to [0, 1], quantize to
        ``n_bits`` levels, spread those levels over 0..255 (so 5-bit white is 255)."""
        if not self.discrete:
            raise DataError("this dataset is continuous; its samples are not images",
                            hint="use a scatter plot or `flowspec sample --npy`")
        top = self.levels - 1
        q = torch.floor(x.float().clamp(0.0, 1.0) * self.levels).clamp(0, top)
        return torch.round(q * (255.0 / top)).to(torch.uint8)

    def describe(self) -> dict[str, Any]:
        out = {"steps": [{n: p} for n, p in self.steps], "n_bits": self.n_bits,
                "dequantize": self.dequantize, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape)}
        if self.widths is not None:
            out["bin_widths"] = self.widths.tolist()
        return out
