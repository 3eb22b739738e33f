"""The validation split: a seeded share of the training data, held out for choosing.

Every dataset gives ``train`` and ``test``; model selection (the ``best``
checkpoint, early stopping) must never look at ``test``, so ``data.val_fraction``
carves a validation split out of ``train`` for any dataset, with a permutation
seeded by ``data.split_seed``. The carve is a pure function of the training
split's length and the seed, so a resumed run, ``flowspec eval --split val`` and
a later run of the same spec all see the same examples in each split.
"""

from __future__ import annotations

from typing import Any

import torch

from flowspec.data.base import DataSource, DataSplit
from flowspec.data.lazy import is_lazy

#: the keys of a spec's ``data`` section that configure splitting, with their defaults
SPLIT_SCHEMA: dict[str, Any] = {
    "val_fraction": {"type": "number", "minimum": 0, "maximum": 0.5, "default": 0.1,
                     "description": "share of the training split held out as the validation "
                     "split (best checkpoint, early stopping); 0: no validation split"},
    "split_seed": {"type": "integer", "default": 0,
                   "description": "seed of the permutation that carves the validation split"},
}


def split_defaults() -> dict[str, Any]:
    return {k: v["default"] for k, v in SPLIT_SCHEMA.items()}


def carve_part(n: int, fraction: float, seed: int, dtype: torch.dtype = torch.int64
               ) -> torch.Tensor:
    """The sorted positions a seeded permutation of ``range(n)`` carves off (``fraction`` of
    them). ``dtype=torch.int32`` gives the same positions (randperm draws the same
    permutation in any integer dtype) at half the bytes, for huge splits read on demand."""
    n_val = int(round(n * fraction))
    if fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return perm[:n_val].sort().values


def carve_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)`` of a seeded permutation of ``range(n)``; both sorted, so the
    remaining training examples keep their order."""
    val = carve_part(n, fraction, seed)
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val


def split_off(split: DataSplit, fraction: float, seed: int) -> tuple[DataSplit, DataSplit]:
    """``(rest, part)`` of ``split`` as :func:`carve_indices` divides it. Rows read on demand
    never get an index of the rest: it is kept as "all but the part" (see
    :meth:`flowspec.data.lazy.LazyRows.without`), so carving a huge file costs 4 bytes a
    row for a moment, not 24."""
    n = len(split)
    if not is_lazy(split.x):
        rest_idx, part_idx = carve_indices(n, fraction, seed)
        return take(split, rest_idx), take(split, part_idx)
    part_idx = carve_part(n, fraction, seed, torch.int32 if n < 2**31 else torch.int64)
    keep = None
    fields = {}
    for k, v in vars(split).items():
        if is_lazy(v):
            fields[k] = v.without(part_idx)
        elif torch.is_tensor(v):
            if keep is None:
                keep = torch.ones(n, dtype=torch.bool)
                keep[part_idx.long()] = False
            fields[k] = v[keep]
        else:
            fields[k] = v
    return type(split)(**fields), take(split, part_idx)


def check_not_empty(n: int, n_train: int, n_val: int, fraction: float) -> None:
    """An empty split is never evaluated as if it were a result (its mean NLL would read 0)."""
    from flowspec.errors import DataError

    if n_val == 0 or n_train == 0:
        empty = "validation" if n_val == 0 else "training"
        raise DataError(f"the {empty} split is empty: {n} training example(s) cannot be divided "
                        f"into train and val (data.val_fraction {fraction:g})",
                        hint="add examples, or set data.val_fraction: 0 (no best checkpoint is "
                             "then chosen; test is only monitored)")


def take(split: DataSplit, idx: torch.Tensor) -> DataSplit:
    """The examples ``idx`` of every tensor field of ``split`` (rows read on demand stay
    unread: their index is narrowed, see :mod:`flowspec.data.lazy`)."""
    fields = {k: (v[idx] if torch.is_tensor(v) else v.take_rows(idx) if is_lazy(v) else v)
              for k, v in vars(split).items()}
    return type(split)(**fields)


class WithValidation:
    """A dataset whose ``train`` split is divided into ``train`` and ``val``.

    Everything else (shape, classes, entropy, ``test``) is the wrapped source's.
    """

    def __init__(self, source: DataSource, fraction: float, seed: int):
        self.source, self.fraction, self.seed = source, fraction, seed
        self._parts: tuple[DataSplit, DataSplit] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def has_split(self, split: str) -> bool:
        return split in ("train", "test") or (split == "val" and self.fraction > 0)

    def load(self, split: str) -> DataSplit:
        if split == "test":
            return self.source.load("test")
        if split not in ("train", "val"):
            DataSource.check_split(split)  # raises: unknown split
        if self.fraction <= 0:
            if split == "val":
                from flowspec.errors import DataError

                raise DataError("this run has no validation split (data.val_fraction is 0)",
                                hint="set data.val_fraction, e.g. --set data.val_fraction=0.1")
            return self.source.load("train")
        if self._parts is None:
            full = self.source.load("train")
            train, val = split_off(full, self.fraction, self.seed)
            check_not_empty(len(full), len(train), len(val), self.fraction)
            self._parts = train, val
        return self._parts[0] if split == "train" else self._parts[1]
