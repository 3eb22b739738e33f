"""Any folder of images (CelebA, FFHQ thumbnails, your own), decoded once and cached.

Images (jpg/png/bmp/gif/webp, found recursively) are centre-cropped to a square,
resized with Pillow (Lanczos) and stored as one uint8 tensor in a safetensors
cache, keyed by the file list (names, sizes, mtimes) and the decoding options, so
the second load is a memory map, not 200k JPEG decodes.

* labels: the first-level sub-folder names, when every image is in one and there
  are at least two (class ``i`` = i-th name in sorted order);
* attributes: a CelebA-style ``list_attr_celeba.txt`` (count line, names line,
  then ``file ±1 ±1 ...``), as bool ``[N, A]``, matched to images by file name;
* split: CelebA's ``list_eval_partition.txt`` (0 train, 2 test; 1 = validation is
  not used), or a test fraction of a fixed seeded permutation.

A folder whose decoded images would take more than 1 GiB (or ``stream: true``) is
not decoded up front: its splits hold :class:`~flowspec.data.image_rows.ImageRows`,
decoded per batch by ``data.workers`` DataLoader processes, in the same order and
to the same pixels as the cache.

Both lists are found automatically in the folder or its parent (CelebA's layout:
``celeba/list_attr_celeba.txt`` beside ``celeba/img_align_celeba/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from flowspec.data.base import DATASETS, DataSource, DataSplit
from flowspec.data.cache import user_cache_dir
from flowspec.data.image_rows import ImageRows
from flowspec.data.lazy import STREAM_BYTES, is_lazy
from flowspec.errors import DataError
from flowspec.registry import params_schema

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
CACHE_DIR = ".flowspec-cache"
CACHE_VERSION = 1


def decode_image(path: Path, size: tuple[int, int], channels: int = 3, crop: str = "center",
                 crop_size: int | None = None) -> torch.Tensor:
    """One image file -> uint8 ``[C, H, W]``: centre crop (square, or ``crop_size``), resize."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(path) as img:
            if crop_size is None and img.format == "JPEG":
                img.draft("RGB" if channels == 3 else "L", (max(h, w), max(h, w)))
            img = img.convert("RGB" if channels == 3 else "L")
            if crop == "center":
                side = min(img.size) if crop_size is None else crop_size
                if side > min(img.size):
                    raise DataError(f"{path}: crop_size {side} is larger than the image "
                                    f"{list(img.size)}", hint="lower crop_size")
                left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
                img = img.crop((left, top, left + side, top + side))
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.LANCZOS)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: cannot decode image ({err})",
                        hint="remove or replace the file") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_image_as(path: str | os.PathLike, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """A user's image file -> uint8 ``[C, H, W]`` of a dataset's ``shape`` (crop + resize)."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"cannot turn an image into examples of shape {list(shape)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such image: {path}")
    return decode_image(path, (int(shape[1]), int(shape[2])), channels=int(shape[0]))


def read_attributes(path: Path) -> tuple[list[str], dict[str, list[bool]]]:
    """CelebA ``list_attr_celeba.txt`` -> (names, {file name: flags})."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read attributes ({err})") from None
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a line of attribute names")
    names = lines[1].split()
    rows: dict[str, list[bool]] = {}
    for i, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataError(f"{path}:{i}: {len(parts) - 1} values for {len(names)} attributes")
        try:
            rows[parts[0]] = [int(v) > 0 for v in parts[1:]]
        except ValueError:
            raise DataError(f"{path}:{i}: attribute values must be -1/1 (or 0/1)") from None
    return names, rows


def read_partition(path: Path) -> dict[str, int]:
    """CelebA ``list_eval_partition.txt`` -> {file name: 0 train | 1 valid | 2 test}."""
    out: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the partition ({err})") from None
    for i, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{i}: expected '<file> 0|1|2', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


@DATASETS.register(
    "image_folder",
    schema=params_schema(
        required=("path",),
        path={"type": "string",
              "description": "the folder (absolute, or relative to the data dir)"},
        size={"type": "integer", "minimum": 1, "default": 64,
              "description": "images become size x size"},
        crop={"enum": ["center", "none"], "default": "center",
              "description": "centre-crop to a square first, or squash the whole image"},
        crop_size={"type": ["integer", "null"], "minimum": 1, "default": None,
                   "description": "centre-crop this many pixels before resizing (CelebA: 148)"},
        channels={"enum": [1, 3], "default": 3, "description": "3 = RGB, 1 = greyscale"},
        attributes={"type": ["string", "null"], "default": None,
                    "description": f"attribute list; default: {ATTR_FILE} in the folder or its "
                                   "parent, if any"},
        split={"type": ["number", "string", "null"], "default": None,
               "description": f"test fraction, or a partition file; default: {PARTITION_FILE} "
                              "in the folder or its parent if any, else 0.1"},
        limit={"type": ["integer", "null"], "minimum": 1, "default": None,
               "description": "keep only the first N examples of each split (quick runs)"},
        stream={"type": ["boolean", "null"], "default": None,
                "description": "decode images per batch in DataLoader workers (data.workers) "
                               "instead of all up front into the cache; null: when the decoded "
                               "images would take more than 1 GiB"},
    ),
    category="image",
    examples=[{"params": {"path": "celeba", "size": 64, "crop_size": 148}}],
)
class ImageFolder(DataSource):
    """A folder of images as an 8-bit dataset: labels from sub-folders, CelebA-style
    attributes and partitions when present, decoded once into a cache."""

    discrete = True

    def __init__(self, data_dir: Path | None = None, *, path: str, size: int = 64,
                 crop: str = "center", crop_size: int | None = None, channels: int = 3,
                 attributes: str | None = None, split: float | str | None = None,
                 limit: int | None = None, stream: bool | None = None):
        super().__init__(data_dir)
        self.root = self._resolve(path)
        self.size, self.crop, self.crop_size = int(size), crop, crop_size
        self.channels = int(channels)
        self.shape = (self.channels, self.size, self.size)
        self.limit = limit
        self.stream = stream
        if isinstance(split, (int, float)) and not isinstance(split, bool) \
                and not 0.0 < split < 1.0:
            raise DataError(f"image_folder split {split} must be a test fraction in (0, 1)")
        self.split_param = split
        self.attr_path = self._optional_file(attributes, ATTR_FILE)
        self._files: list[str] | None = None
        self._all: DataSplit | None = None
        self._splits: dict[str, torch.Tensor] | None = None

    # -- locating ---------------------------------------------------------------------------
    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        candidates = [p] if p.is_absolute() else [(self.data_dir or Path("data")) / p, p]
        for c in candidates:
            if c.is_dir():
                return c
        raise DataError(f"image folder '{path}' not found (looked in "
                        f"{', '.join(str(c) for c in candidates)})",
                        hint="give an absolute path or one relative to the data dir")

    def _optional_file(self, given: str | None, default_name: str) -> Path | None:
        if given is None:  # CelebA keeps its lists next to img_align_celeba/, so look up too
            for p in (self.root / default_name, self.root.parent / default_name):
                if p.is_file():
                    return p
            return None
        for c in (Path(given), self.root / given, (self.data_dir or Path("data")) / given):
            if c.is_file():
                return c
        raise DataError(f"file '{given}' not found (relative to {self.root} or the data dir)")

    def files(self) -> list[str]:
        """Image paths relative to the folder, sorted (the order of the cached tensor)."""
        if self._files is None:
            found = []
            for p in self.root.rglob("*"):
                rel = p.relative_to(self.root)
                if rel.parts[0] == CACHE_DIR or p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if p.is_file():
                    found.append(rel.as_posix())
            if not found:
                raise DataError(f"no images (jpg/png/bmp/gif/webp) under {self.root}")
            self._files = sorted(found)
        return self._files

    @property
    def class_names(self) -> list[str] | None:
        files = self.files()
        if any("/" not in f for f in files):
            return None
        names = sorted({f.split("/", 1)[0] for f in files})
        return names if len(names) >= 2 else None

    @property
    def num_classes(self) -> int | None:  # type: ignore[override]
        names = self.class_names
        return len(names) if names else None

    @property
    def attribute_names(self) -> list[str] | None:  # type: ignore[override]
        if self.attr_path is None:
            return None
        with self.attr_path.open() as fh:
            fh.readline()
            return fh.readline().split()

    # -- decoding and cache -----------------------------------------------------------------
    def cache_key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"v": CACHE_VERSION, "size": self.size, "crop": self.crop,
                             "crop_size": self.crop_size, "channels": self.channels}).encode())
        for rel in self.files():
            st = (self.root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]

    def cache_paths(self) -> list[Path]:
        name = f"{self.cache_key()}.safetensors"
        return [self.root / CACHE_DIR / name, user_cache_dir() / "image_folder" / name]

    def _decode_all(self) -> torch.Tensor:
        files = self.files()
        out = torch.empty((len(files), *self.shape), dtype=torch.uint8)

        def work(i: int) -> None:
            out[i] = decode_image(self.root / files[i], (self.size, self.size), self.channels,
                                  self.crop, self.crop_size)

        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(len(files))))
        return out

    def images(self) -> torch.Tensor:
        """All images, uint8 ``[N, C, S, S]`` in :meth:`files` order; cached on disk."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save_file

        paths = self.cache_paths()
        for p in paths:
            if p.is_file():
                try:
                    x = load_file(p)["x"]
                    if tuple(x.shape) == (len(self.files()), *self.shape):
                        return x
                except (SafetensorError, OSError, KeyError):
                    pass  # a broken cache is rebuilt below
        x = self._decode_all()
        for p in paths:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
                os.close(fd)
                save_file({"x": x}, tmp, metadata={"root": str(self.root)})
                os.replace(tmp, p)
                break
            except OSError:
                continue  # read-only folder: try the user cache dir, else keep it in memory
        return x

    # -- splits ----------------------------------------------------------------------------
    def _split_indices(self) -> dict[str, torch.Tensor]:
        files = self.files()
        n = len(files)
        split = self.split_param
        part_path = None
        if isinstance(split, str):
            part_path = self._optional_file(split, PARTITION_FILE)
        elif split is None:
            part_path = self._optional_file(None, PARTITION_FILE)
        if part_path is not None:
            part = read_partition(part_path)
            codes = []
            for rel in files:
                name = rel.rsplit("/", 1)[-1]
                if name not in part:
                    raise DataError(f"{part_path}: no partition for image '{rel}'",
                                    hint="the partition file must list every image")
                codes.append(part[name])
            codes_t = torch.tensor(codes)
            return {"train": torch.nonzero(codes_t == 0).flatten(),
                    "test": torch.nonzero(codes_t == 2).flatten()}
        fraction = 0.1 if split is None else float(split)
        n_test = min(max(1, round(fraction * n)), n - 1) if n >= 2 else 0
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        return {"train": perm[n_test:].sort().values, "test": perm[:n_test].sort().values}

    def _labels(self) -> torch.Tensor | None:
        names = self.class_names
        if names is None:
            return None
        index = {c: i for i, c in enumerate(names)}
        return torch.tensor([index[f.split("/", 1)[0]] for f in self.files()], dtype=torch.int64)

    def _attributes(self) -> torch.Tensor | None:
        if self.attr_path is None:
            return None
        names, rows = read_attributes(self.attr_path)
        flags = []
        for rel in self.files():
            name = rel.rsplit("/", 1)[-1]
            if name not in rows:
                raise DataError(f"{self.attr_path}: no attributes for image '{rel}'",
                                hint="the attribute list must cover every image")
            flags.append(rows[name])
        return torch.tensor(flags, dtype=torch.bool).reshape(len(flags), len(names))

    def streams(self) -> bool:
        """Decode per batch (:mod:`flowspec.data.image_rows`) rather than up front: when
        asked, or (``stream: null``) when the decoded images would exceed 1 GiB."""
        if self.stream is not None:
            return bool(self.stream)
        return len(self.files()) * self.channels * self.size ** 2 > STREAM_BYTES

    def load(self, split: str) -> DataSplit:
        self.check_split(split)
        if self._all is None and self.streams():
            rows = ImageRows(self.root, self.files(), self.channels, self.size, self.crop,
                             self.crop_size)
            self._all = DataSplit(x=rows, y=self._labels(),  # type: ignore[arg-type]
                                  attrs=self._attributes())
            self._splits = self._split_indices()
        if self._all is None:
            self._all = DataSplit(x=self.images(), y=self._labels(), attrs=self._attributes())
            self._splits = self._split_indices()
        idx = self._splits[split]  # type: ignore[index]
        if self.limit is not None:
            idx = idx[: self.limit]
        if idx.numel() == 0:
            raise DataError(f"image folder {self.root}: the {split} split is empty",
                            hint="add images, or set split to a test fraction")
        a = self._all
        return DataSplit(x=a.x.take_rows(idx) if is_lazy(a.x) else a.x[idx],
                         y=a.y[idx] if a.y is not None else None,
                         attrs=a.attrs[idx] if a.attrs is not None else None)

