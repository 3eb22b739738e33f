"""MNIST from the four standard IDX files (gzip-compressed or not), validated.

IDX: a big-endian header -- magic ``0x0803`` (images, then N, rows, cols) or
``0x0801`` (labels, then N) -- followed by raw unsigned bytes. Every header, size
and label range is checked, so a truncated download is a clear error, not a
silently short dataset.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from flowspec.data.base import DATASETS, DataSource, DataSplit
from flowspec.errors import DataError
from flowspec.registry import params_schema

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FETCH_HINT = "run `flowspec data fetch mnist` (or copy the four IDX files there)"


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err})", hint="the file is corrupt or "
                        "truncated; delete it and fetch again") from None


def read_idx(path: Path, magic: int, shape_tail: tuple[int, ...] | None = None) -> torch.Tensor:
    """One IDX file of unsigned bytes -> uint8 tensor ``[N, *dims]``, header checked."""
    data = _read_bytes(path)
    ndim = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}[magic]
    header = 4 + 4 * ndim
    found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if found is not None and found != magic:
        raise DataError(f"{path}: bad IDX magic number {found:#010x} (expected {magic:#010x})",
                        hint="is this the right file (images vs labels)? else fetch again")
    if len(data) < header:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header",
                        hint="the file is truncated; delete it and fetch again")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if shape_tail is not None and tuple(dims[1:]) != shape_tail:
        raise DataError(f"{path}: examples of shape {list(dims[1:])}, expected {list(shape_tail)}")
    expected = header + _prod(dims)
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, but its header {list(dims)} says {expected}",
                        hint="the file is truncated or corrupt; delete it and fetch again")
    flat = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    return flat.reshape(dims)


def _prod(dims: tuple[int, ...]) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def find_file(roots: list[Path], stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` (also the ``train-images.idx3-ubyte`` spelling) in a root."""
    names = [stem, stem + ".gz"]
    dotted = stem.replace("-idx", ".idx")
    names += [dotted, dotted + ".gz"]
    for root in roots:
        for name in names:
            if (root / name).is_file():
                return root / name
    return None


@DATASETS.register(
    "mnist",
    schema=params_schema(
        pad={"type": ["integer", "null"], "minimum": 28, "default": None,
             "description": "zero-pad the 28x28 digits to this size, centred (e.g. 32)"},
        limit={"type": ["integer", "null"], "minimum": 1, "default": None,
               "description": "keep only the first N examples of each split (quick runs)"},
    ),
    category="image",
    examples=[{"params": {"pad": 32}}],
)
class MNIST(DataSource):
    """The 70,000 28x28 handwritten digits (60k train, 10k test), 1 channel, labels 0-9.

    Files: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` in ``<data_dir>/mnist``
    (or ``<data_dir>``, or torchvision's ``<data_dir>/MNIST/raw``), gzipped or not.
    """

    discrete = True
    num_classes = 10

    def __init__(self, data_dir: Path | None = None, *, pad: int | None = None,
                 limit: int | None = None):
        super().__init__(data_dir)
        if pad is not None and pad < 28:
            raise DataError(f"mnist pad {pad} is smaller than the 28x28 digits")
        self.size = pad or 28
        self.limit = limit
        self.shape = (1, self.size, self.size)
        self._cache: dict[str, DataSplit] = {}

    def roots(self) -> list[Path]:
        base = self.data_dir or Path("data")
        return [base / "mnist", base, base / "MNIST" / "raw"]

    def load(self, split: str) -> DataSplit:
        self.check_split(split)
        if split in self._cache:
            return self._cache[split]
        roots = self.roots()
        paths = []
        for stem in STEMS[split]:
            path = find_file(roots, stem)
            if path is None:
                raise DataError(f"MNIST file {stem}(.gz) not found in {roots[0]}",
                                hint=FETCH_HINT)
            paths.append(path)
        x = read_idx(paths[0], IMAGES_MAGIC, (28, 28))
        y = read_idx(paths[1], LABELS_MAGIC)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"MNIST {split}: {x.shape[0]} images but {y.shape[0]} labels",
                            hint="the files do not belong together; fetch them again")
        if y.numel() and int(y.max()) > 9:
            raise DataError(f"{paths[1]}: label {int(y.max())} is not a digit 0-9")
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        x = x.unsqueeze(1)
        if self.size != 28:
            lo = (self.size - 28) // 2
            hi = self.size - 28 - lo
            x = F.pad(x, (lo, hi, lo, hi))
        self._cache[split] = DataSplit(x=x.contiguous(), y=y.long())
        return self._cache[split]
