"""Datasets and preprocessing. Every module in this package registers itself on import.

``open_dataset(spec.data, data_dir)`` is the one entry point: it returns the
dataset (:class:`DataSource`, whose ``load(split)`` gives whole tensors) and the
:class:`Preprocessing` that turns raw batches into model input. Units and the
accounting of preprocessing in reported likelihoods: :mod:`flowspec.data.preprocess`
and :mod:`flowspec.metrics`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any

from flowspec.data.base import DATASETS, PREPROCESS, DataSource, DataSplit, check_params
from flowspec.errors import Problem, SpecError, UnknownNameError

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

from flowspec.data.folder import load_image_as  # noqa: E402
from flowspec.data.loader import LOADER_SCHEMA  # noqa: E402
from flowspec.data.preprocess import Preprocessing  # noqa: E402
from flowspec.data.splits import SPLIT_SCHEMA, WithValidation, split_defaults  # noqa: E402

__all__ = ["DATASETS", "PREPROCESS", "DataSource", "DataSplit", "Preprocessing",
           "dataset_info", "default_data_dir", "load_image_as", "open_dataset",
           "open_spec_dataset"]


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$FLOWSPEC_DATA``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("FLOWSPEC_DATA")
    return Path(env) if env else Path("data")


def build_source(value: Any, data_dir: Path, path: str = "data.dataset",
                 spec_dir: str | os.PathLike | None = None) -> DataSource:
    """``name`` or ``{name: {params}}`` -> the dataset, parameters checked against its schema.

    ``spec_dir``: the directory of the spec file, where user files (the ``file`` dataset)
    are also looked for."""
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, dict) and len(value) == 1:
        (name, params), = value.items()
        name = str(name)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise SpecError(Problem(f"parameters of '{name}' must be a mapping, got {params!r}",
                                    path, hint=f"e.g. {{{name}: {{n_train: 1000}}}}"))
    else:
        raise SpecError(Problem(f"expected a dataset name or {{name: {{params}}}}, got {value!r}",
                                path, hint="e.g. dataset: moons"))
    try:
        entry = DATASETS.get(name)
    except UnknownNameError as err:
        raise SpecError(Problem(err.message, path)) from None
    check_params(entry, params, f"{path}.{name}")
    source = entry.obj(data_dir, **entry.with_defaults(params))
    source.spec_dir = Path(spec_dir) if spec_dir is not None else None
    return source


def open_dataset(data_spec: Any, data_dir: str | os.PathLike | None = None, *,
                 spec_dir: str | os.PathLike | None = None, **about_model: Any
                 ) -> tuple[DataSource, Preprocessing]:
    """A spec's ``data`` section -> (dataset, preprocessing); nothing is loaded yet.

    ``data_spec = {"dataset": name | {name: params}, "preprocess": [step, ...],
    "val_fraction": 0.1, "split_seed": 0}``; the dataset returned gives ``train``,
    ``val`` (when ``val_fraction > 0``) and ``test``. ``spec_dir`` (the spec file's
    directory) is searched for relative file paths after ``data_dir``.
    """
    if data_spec is None:
        raise SpecError(Problem("this spec has no data section", "data",
                                hint="add data: {dataset: moons} (or mnist, cifar10, ...)"))
    if not isinstance(data_spec, dict) or data_spec.get("dataset") is None:
        raise SpecError(Problem("data needs a 'dataset'", "data.dataset",
                                hint="e.g. dataset: mnist (or moons, cifar10, image_folder)"))
    unknown = sorted(set(data_spec) - {"dataset", "preprocess", *SPLIT_SCHEMA,
                                         *LOADER_SCHEMA})
    if unknown:
        raise SpecError(Problem(f"unknown key(s) {unknown}", "data",
                                hint="data takes dataset, preprocess, val_fraction, split_seed, "
                                     "workers, prefetch"))
    steps = data_spec.get("preprocess") or []
    if not isinstance(steps, list):
        raise SpecError(Problem("preprocess must be a list of steps", "data.preprocess"))
    source = build_source(data_spec["dataset"], default_data_dir(data_dir), spec_dir=spec_dir)
    for key, value in about_model.items():  # input_vars, model_shapes: for messages
        setattr(source, key, value)
    split = {**split_defaults(), **{k: data_spec[k] for k in SPLIT_SCHEMA if k in data_spec}}
    return (WithValidation(source, split["val_fraction"], split["split_seed"]),
            Preprocessing(steps, source))


def open_spec_dataset(spec: Any, data_dir: str | os.PathLike | None = None
                      ) -> tuple[DataSource, Preprocessing]:
    """:func:`open_dataset` for a loaded spec: relative data files are also looked for
    next to the spec file it came from."""
    source = getattr(spec, "source", None)
    graph = getattr(spec, "graph", None)
    shapes = None
    if graph is not None and (graph.context is None or graph.context.num_classes is None):
        ctx = graph.context
        shapes = (tuple(graph.input_shape), tuple(ctx.tensor_shape) if ctx is not None else None)
    return open_dataset(spec.data, data_dir, spec_dir=Path(source).parent if source else None,
                        input_vars=_input_vars(source), model_shapes=shapes)


def _input_vars(path: str | None) -> list[str | None] | None:
    """The variable behind each entry of ``model.input`` in the spec file (``["${D}"]`` ->
    ``["D"]``), so a shape mismatch can say ``--set vars.D=...``; None if unknown."""
    import re

    import yaml

    if not path or not Path(path).is_file():
        return None
    try:
        raw = yaml.safe_load(Path(path).read_text())
        shape = raw["model"]["input"]
    except Exception:  # the spec loaded already; this is only for a hint
        return None
    if not isinstance(shape, list):
        return None
    out = []
    for item in shape:
        m = re.fullmatch(r"\$\{\s*([A-Za-z_]\w*)\s*\}", item) if isinstance(item, str) else None
        out.append(m.group(1) if m else None)
    return out


def dataset_info(source: DataSource, prep: Preprocessing | None = None,
                 load: bool = False) -> dict[str, Any]:
    """What ``flowspec data info`` prints: shapes, kind, classes, entropy, pipeline.

    ``load=True`` also reads both splits for their sizes (and checks the files).
    """
    info: dict[str, Any] = {
        "dataset": getattr(source, "registered_name", type(source).__name__),
    "val_fraction": getattr(source, "fraction", 0.0),
        "shape": list(source.shape),
        "discrete": bool(source.discrete),
        "num_classes": source.num_classes,
        "attributes": source.attribute_names,
        "entropy_nats": source.entropy,
    }
    if prep is not None:
        info["preprocess"] = prep.describe()
        info["model_input"] = list(prep.out_shape)
        dims = 1
        for d in prep.out_shape:
            dims *= d
        info["num_dims"] = dims
    if load:
        for split in ("train", "val", "test"):
            if source.has_split(split):
                info[f"n_{split}"] = len(source.load(split))
    return info
