"""CIFAR-10 from the official python batches, unpickled safely.

The official files are Python pickles (dicts holding a numpy array). A pickle can
name any importable callable, so they are read with an unpickler that resolves
only the few globals these files use -- numpy array reconstruction and latin-1
string encoding -- and refuses everything else: a tampered file is a DataError,
never code execution. The batches are read from ``cifar-10-batches-py/`` or
straight out of the official ``cifar-10-python.tar.gz`` (nothing is extracted).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspec.data.base import DATASETS, DataSource, DataSplit
from flowspec.errors import DataError
from flowspec.registry import params_schema

FOLDER = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
FETCH_HINT = "run `flowspec data fetch cifar10` (or put the official python batches there)"


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call to rebuild ``bytes``; only the latin-1 codec."""
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"codec {encoding!r} not allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class SafeUnpickler(pickle.Unpickler):
    """Builtin containers and scalars, numpy arrays, nothing else."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def safe_load(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (Python 2 strings stay bytes)."""
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def _key(d: dict, name: str) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise KeyError(name)


def parse_batch(data: bytes, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> (uint8 images [N, 3, 32, 32], int64 labels [N])."""
    try:
        batch = safe_load(data)
    except Exception as err:  # any failure to unpickle means a bad file
        raise DataError(f"{where}: not a valid CIFAR-10 batch ({err})",
                        hint="delete it and fetch the official files again") from None
    try:
        images = np.asarray(_key(batch, "data"))
        labels = np.asarray(_key(batch, "labels"), dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{where}: a CIFAR-10 batch needs 'data' and 'labels' ({err})") from None
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: 'data' is {images.dtype} {list(images.shape)}, "
                        "expected uint8 [N, 3072]")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{where}: {images.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0-9")
    x = torch.from_numpy(images.copy()).reshape(-1, 3, 32, 32)
    return x, torch.from_numpy(labels.copy())


@DATASETS.register(
    "cifar10",
    schema=params_schema(
        limit={"type": ["integer", "null"], "minimum": 1, "default": None,
               "description": "keep only the first N examples of each split (quick runs)"},
    ),
    category="image",
    examples=[{"params": {}}],
)
class CIFAR10(DataSource):
    """60,000 32x32 colour images of 10 classes (50k train, 10k test).

    Files: ``<data_dir>/cifar10/cifar-10-batches-py/`` (``data_batch_1..5``,
    ``test_batch``) or the official ``cifar-10-python.tar.gz`` in ``<data_dir>/cifar10``
    or ``<data_dir>``.
    """

    discrete = True
    num_classes = 10
    shape = (3, 32, 32)
    class_names = CLASSES

    def __init__(self, data_dir: Path | None = None, *, limit: int | None = None):
        super().__init__(data_dir)
        self.limit = limit
        self._cache: dict[str, DataSplit] = {}

    def roots(self) -> list[Path]:
        base = self.data_dir or Path("data")
        return [base / "cifar10", base]

    def _read_batches(self, names: list[str]) -> list[tuple[bytes, str]]:
        for root in self.roots():
            folder = root / FOLDER
            if folder.is_dir():
                out = []
                for name in names:
                    path = folder / name
                    if not path.is_file():
                        raise DataError(f"CIFAR-10 batch {path} is missing", hint=FETCH_HINT)
                    out.append((path.read_bytes(), str(path)))
                return out
        for root in self.roots():
            tar_path = root / TARBALL
            if tar_path.is_file():
                return self._read_tar(tar_path, names)
        raise DataError(f"CIFAR-10 not found: no {FOLDER}/ or {TARBALL} in {self.roots()[0]}",
                        hint=FETCH_HINT)

    @staticmethod
    def _read_tar(tar_path: Path, names: list[str]) -> list[tuple[bytes, str]]:
        out = []
        try:
            with tarfile.open(tar_path, "r:gz") as tar:
                for name in names:
                    member = f"{FOLDER}/{name}"
                    try:
                        fh = tar.extractfile(member)
                    except KeyError:
                        fh = None
                    if fh is None:
                        raise DataError(f"{tar_path} has no file {member}", hint=FETCH_HINT)
                    out.append((fh.read(), f"{tar_path}:{member}"))
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{tar_path}: cannot read the archive ({err})",
                            hint="it is corrupt or truncated; delete it and fetch again") from None
        return out

    def load(self, split: str) -> DataSplit:
        self.check_split(split)
        if split not in self._cache:
            parts = [parse_batch(data, where) for data, where in self._read_batches(BATCHES[split])]
            x = torch.cat([p[0] for p in parts])
            y = torch.cat([p[1] for p in parts])
            if self.limit is not None:
                x, y = x[: self.limit], y[: self.limit]
            self._cache[split] = DataSplit(x=x.contiguous(), y=y)
        return self._cache[split]
