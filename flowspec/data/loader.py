"""Training batches of a split read on demand, prepared ahead by DataLoader workers.

A split whose rows are read on demand (a streamed file, an image folder decoded
per batch: :func:`flowspec.data.lazy.is_lazy`) is not indexed by the training step
itself: :class:`StepLoader` runs a ``torch.utils.data.DataLoader`` whose item ``s``
is the whole batch of step ``s`` (rows from :mod:`flowspec.data.shards`), built by
``data.workers`` processes, ``data.prefetch`` batches ahead each. The batches are
the same whatever the number of workers (0: built in the training process).

It also measures whether it keeps up: :meth:`StepLoader.stats` gives the examples/s
the loader can deliver (batches built per second of worker time, times the
workers) and the share of wall time the training step waited for its batch; the
trainer logs both and warns when the step waits (``flowspec.train.loader_watch``).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import numpy as np
import torch

from flowspec.data.shards import RandomOrder, ShardWindows

#: the ``data`` section's loader keys
LOADER_SCHEMA: dict[str, Any] = {
    "workers": {"type": ["integer", "null"], "minimum": 0, "default": None,
                "description": "processes preparing training batches of data read on demand "
                               "(streamed files, streamed image folders); null: 0 for tables "
                               "(a batch is one gather, cheaper than a worker's queue), half "
                               "the CPU cores (1 to 4) for image folders; 0: in the training "
                               "process"},
    "prefetch": {"type": "integer", "minimum": 1, "default": 2,
                 "description": "batches each worker prepares ahead"},
}


def default_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 2) // 2))


def _rows(t: Any, idx: np.ndarray) -> Any:
    if t is None:
        return None
    return t[torch.from_numpy(np.ascontiguousarray(idx))] if torch.is_tensor(t) else t[idx]


class StepBatches(torch.utils.data.Dataset):
    """Item ``step``: ``(step, x, y, context, seconds it took)`` of that step's rows."""

    def __init__(self, split: Any, order: Any):
        self.split, self.order = split, order

    def __getitem__(self, step: int) -> tuple:
        t0 = time.perf_counter()
        idx = self.order(step)
        s = self.split
        out = (_rows(s.x, idx), _rows(s.y, idx), _rows(getattr(s, "context", None), idx))
        return (step, *out, time.perf_counter() - t0)


class _From:
    """Steps ``start, start + 1, ...`` (the DataLoader's sampler)."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)


class StepLoader:
    """The batches of consecutive steps, built ahead (see the module doc)."""

    def __init__(self, split: Any, order: Any, workers: int | None = None, prefetch: int = 2):
        self.dataset = StepBatches(split, order)
        self.seed = getattr(order, "seed", None)
        self.workers = default_workers() if workers is None else int(workers)
        self.prefetch = int(prefetch)
        self._it: Any = None
        self._next = self._first = -1
        self._reset_stats()

    def _reset_stats(self) -> None:
        self._t0, self._wait, self._work, self._examples = time.perf_counter(), 0.0, 0.0, 0

    def _start(self, step: int) -> None:
        self.close()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, sampler=_From(step), num_workers=self.workers,
            prefetch_factor=self.prefetch if self.workers else None,
            # its own generator: starting workers must not draw from the global RNG, which
            # the trainer seeds per step for dequantization noise
            generator=torch.Generator().manual_seed(step))
        self._it, self._next, self._first = iter(loader), step, step

    def get(self, step: int) -> tuple[Any, Any, Any]:
        """``(x, y, context)`` of ``step`` (rows as stored: uint8 images, float32 rows)."""
        if self._it is None or step != self._next:
            self._start(step)
        t0 = time.perf_counter()
        got, x, y, c, took = next(self._it)
        if step != self._first:  # the first batch also waits for the workers to start
            self._wait += time.perf_counter() - t0
        assert got == step, (got, step)
        self._next = step + 1
        self._work += took
        self._examples += len(x)
        return x, y, c

    def stats(self) -> dict[str, float]:
        """Since the last call: ``loader_examples_per_s`` (what the loader can deliver)
        and ``data_wait`` (share of wall time the step waited for a batch)."""
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        out = {"loader_examples_per_s": self._examples / max(self._work, 1e-9)
               * max(1, self.workers), "data_wait": min(1.0, self._wait / elapsed)}
        if not self._examples:
            out = {}
        self._reset_stats()
        return out

    def close(self) -> None:
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def step_loader(split: Any, *, batch_size: int, local_batch: int, rank: int, seed: int,
                workers: int | None, prefetch: int) -> StepLoader:
    """The loader of a split read on demand: shard-wise order for tables on disk, the
    in-memory permutation for per-file rows (image folders)."""
    n = len(split.x)
    if getattr(split.x, "sampling", "random") == "windows":
        row_bytes = split.x.reader.row_bytes
        order: Any = ShardWindows(n, row_bytes, batch_size, local_batch, rank, seed)
        if workers is None:  # one sorted gather a batch: a worker's queue costs more
            workers = 0
    else:
        order = RandomOrder(n, batch_size, local_batch, rank, seed)
    return StepLoader(split, order, workers, prefetch)
