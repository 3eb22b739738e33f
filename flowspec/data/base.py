"""Dataset and preprocessing registries (filled by the modules of this package)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowspec.errors import DataError
from flowspec.registry import Registry

DATASETS = Registry("dataset", plugin_group="flowspec.datasets", title="Datasets")
PREPROCESS = Registry("preprocessing step", title="Preprocessing steps")


@dataclass
class DataSplit:
    """One split of a dataset, whole, as tensors (the datasets here fit in memory).

    ``x`` is uint8 ``[N, C, H, W]`` for images and float32 ``[N, D]`` for continuous
    data; ``y`` int64 class labels ``[N]``; ``attrs`` bool ``[N, A]`` attribute flags;
    ``context`` float32 ``[N, K...]``, the condition of a conditional density
    ``p(x | context)`` (flows with ``model.context: {shape: [K]}``; class-conditional
    flows read ``y``).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    attrs: torch.Tensor | None = None
    context: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


class DataSource:
    """Base class of every registered dataset, constructed as ``Cls(data_dir, **params)``.

    Subclasses set the attributes below in ``__init__`` (cheaply: no file is read
    there) and implement :meth:`load`, which raises :class:`~flowspec.errors.DataError`
    saying where the files go and how to get them when they are missing or corrupt.
    """

    shape: tuple[int, ...] = ()
    discrete: bool = False
    num_classes: int | None = None
    attribute_names: list[str] | None = None
    entropy: float | None = None
    #: directory of the spec file the dataset was declared in (set by ``open_dataset``);
    #: sources reading user files resolve relative paths against it after the data dir
    spec_dir: Path | None = None

    def __init__(self, data_dir: Path | None = None, **params: Any):
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.params = params

    def load(self, split: str) -> DataSplit:
        """The whole split as tensors. Sources give ``train`` and ``test``; ``val`` is
        carved out of ``train`` by :class:`flowspec.data.splits.WithValidation`."""
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        return split in ("train", "test")

    @staticmethod
    def check_split(split: str) -> None:
        if split not in SPLITS:
            hint = ("a dataset's own files give train and test; the val split comes from "
                    "data.val_fraction") if split == "val" else "use 'train', 'val' or 'test'"
            raise DataError(f"unknown split '{split}'", hint=hint)


#: the splits a dataset's own files give (``val`` is carved from ``train``: data/splits.py)
SPLITS = ("train", "test")


def check_params(entry: Any, params: dict, path: str) -> None:
    """Validate a registered entry's parameters; a located SpecError on the first mistake.

    The spec layer has already checked specs it loaded; this guards direct callers
    of :func:`flowspec.data.open_dataset` with hand-written dicts.
    """
    import jsonschema

    from flowspec.errors import Problem, SpecError

    try:
        jsonschema.validate(params, entry.schema)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path)
        raise SpecError(Problem(err.message, path + (f".{where}" if where else ""))) from None
