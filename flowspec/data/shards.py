"""Which rows each training step reads, for a split read on demand.

Two orders, both a pure function of ``(seed, step)`` so that a resumed run replays
the batches an uninterrupted one would have drawn:

* :class:`RandomOrder` -- the in-memory order: a seeded permutation of all rows per
  epoch (image folders: every image is a file of its own, any order reads as fast);
* :class:`ShardWindows` -- for a table on disk. Uniformly random rows would make
  every batch ``batch_size`` random reads all over a file larger than memory. So
  the rows are cut into *shards* of contiguous rows (~1 MiB); each epoch visits the
  shards in a seeded random order, a *window* of consecutive shards in that order
  (~64 MiB, at least 4 batches) is shuffled as one buffer, and batches are taken
  from the buffers in turn. A batch's reads then fall in ~64 random 1 MiB stretches
  of the file (read front to back, sorted within the batch), each window's pages are
  read once for all its batches, and every row is still seen once per epoch. The
  price is that a batch mixes rows from ~64 places of the file rather than from
  everywhere: enough for files not sorted by what the model learns at a scale
  beyond a shard (a file sorted by a context value, say, is still mixed across
  shards, but rows within a shard are alike).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SHARD_BYTES = 1 << 20
WINDOW_BYTES = 64 << 20


class RandomOrder:
    """The rows of ``step`` for this rank: the in-memory loop's permutation per epoch."""

    def __init__(self, n: int, batch_size: int, local_batch: int, rank: int, seed: int):
        self.n, self.batch_size, self.local_batch = n, batch_size, local_batch
        self.rank, self.seed = rank, seed
        self.steps_per_epoch = max(1, n // batch_size)
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=gen).numpy(), epoch
        start = i * self.batch_size + self.rank * self.local_batch
        return self._perm[start:start + self.local_batch]  # type: ignore[index]


class ShardWindows:
    """The rows of ``step`` for this rank, shard-wise (see the module doc)."""

    def __init__(self, n: int, row_bytes: int, batch_size: int, local_batch: int, rank: int,
                 seed: int):
        self.n, self.batch_size, self.local_batch = n, batch_size, local_batch
        self.rank, self.seed = rank, seed
        self.steps_per_epoch = max(1, n // batch_size)
        self.shard = max(1, SHARD_BYTES // max(1, row_bytes))
        self.n_shards = math.ceil(n / self.shard)
        per_window = max(WINDOW_BYTES // max(1, self.shard * row_bytes),
                         math.ceil(4 * batch_size / self.shard), 1)
        self.window = min(per_window, self.n_shards)
        self._epoch, self._order, self._ends = -1, None, None
        self._buffers: dict[tuple[int, int], np.ndarray] = {}

    def _shard_rows(self, k: int) -> int:
        return min(self.shard, self.n - k * self.shard)

    def _plan(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_shards)
        sizes = np.minimum(self.shard, self.n - order * self.shard)
        per_window = np.add.reduceat(sizes, np.arange(0, self.n_shards, self.window))
        self._order, self._ends, self._epoch = order, np.cumsum(per_window), epoch
        self._buffers.clear()

    def _buffer(self, epoch: int, w: int) -> np.ndarray:
        """Window ``w`` of ``epoch``: its shards' rows, shuffled (two kept at a time)."""
        key = (epoch, w)
        if key not in self._buffers:
            shards = self._order[w * self.window:(w + 1) * self.window]  # type: ignore[index]
            rows = np.concatenate([np.arange(k * self.shard, k * self.shard
                                             + self._shard_rows(int(k))) for k in shards])
            np.random.default_rng([self.seed, epoch, w + 1]).shuffle(rows)
            if len(self._buffers) >= 2:
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = rows
        return self._buffers[key]

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        self._plan(epoch)
        ends = self._ends
        p0 = i * self.batch_size + self.rank * self.local_batch
        p1 = p0 + self.local_batch
        parts = []
        w = int(np.searchsorted(ends, p0, side="right"))
        while p0 < p1:
            start = 0 if w == 0 else int(ends[w - 1])  # type: ignore[index]
            stop = min(p1, int(ends[w]))  # type: ignore[index]
            parts.append(self._buffer(epoch, w)[p0 - start:stop - start])
            p0, w = stop, w + 1
        return np.concatenate(parts)
