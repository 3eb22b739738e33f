"""The images of a folder decoded when a batch asks for them, not all up front.

:class:`ImageRows` stands where a split's uint8 ``[N, C, S, S]`` tensor stands
(``rows[a:b]``, ``rows[idx]``, ``len``, ``shape``) and decodes only the files asked
for, with the folder's own decoder (:func:`flowspec.data.folder.decode_image`), so
a streamed image is the cached image, bit for bit. Training batches are decoded by
DataLoader workers (:mod:`flowspec.data.loader`) in the in-memory order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspec.data.lazy import TensorLikeSize


class ImageRows(TensorLikeSize):
    """Image files of a folder, decoded on access to uint8 ``[k, C, S, S]``."""

    sampling = "random"
    dtype = torch.uint8
    device = torch.device("cpu")
    is_lazy = True

    def __init__(self, root: Path, files: list[str], channels: int, size: int, crop: str,
                 crop_size: int | None):
        self.root, self.files = Path(root), list(files)
        self.channels, self.side, self.crop, self.crop_size = channels, size, crop, crop_size

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self), self.channels, self.side, self.side])

    def dim(self) -> int:
        return 4

    def element_size(self) -> int:
        return 1

    def _decode(self, i: int) -> torch.Tensor:
        from flowspec.data.folder import decode_image

        return decode_image(self.root / self.files[i], (self.side, self.side), self.channels,
                            self.crop, self.crop_size)

    def __getitem__(self, key: Any) -> torch.Tensor:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            return self._decode(int(key) + (n if key < 0 else 0))
        if isinstance(key, slice):
            idx = range(*key.indices(n))
        else:
            arr = key.cpu().numpy() if torch.is_tensor(key) else np.asarray(key)
            idx = np.flatnonzero(arr) if arr.dtype == bool else arr.astype(np.int64)
        out = torch.empty((len(idx), self.channels, self.side, self.side), dtype=torch.uint8)
        for j, i in enumerate(idx):
            out[j] = self._decode(int(i) + (n if i < 0 else 0))
        return out

    def take_rows(self, ranks: torch.Tensor | np.ndarray) -> ImageRows:
        r = ranks.tolist() if torch.is_tensor(ranks) else np.asarray(ranks).tolist()
        return ImageRows(self.root, [self.files[i] for i in r], self.channels, self.side,
                         self.crop, self.crop_size)

    def chunks(self, rows: int = 1024) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, len(self), rows):
            yield start, self[start:start + rows]

    def to(self, *args: Any, **kwargs: Any) -> ImageRows:
        return self

    def __repr__(self) -> str:
        return f"ImageRows({self.root}, {list(self.shape)})"
