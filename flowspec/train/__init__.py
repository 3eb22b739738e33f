"""Training: the loop, its callbacks, and the library functions that run a request.

* :mod:`~flowspec.train.request` -- :class:`TrainRequest`, built by :func:`make_request`
  (the CLI, resume, sweeps and :func:`flowspec.fit` all use it);
* :mod:`~flowspec.train.session` -- :func:`train`, :func:`resume`, :func:`sweep`;
* :mod:`~flowspec.train.loop` -- :class:`Trainer`, the loop;
* :mod:`~flowspec.train.callbacks` -- evaluation, checkpoints, status, drawing, NaN
  diagnosis, metric sinks, signals;
* :mod:`~flowspec.train.config` -- the ``train`` section's schema (every option is a key).

What one step minimises is an objective (:mod:`flowspec.objectives`); what a run
writes is the run directory (:mod:`flowspec.run`).

The names below are imported on first use, so reading the ``train`` schema (every
spec load does) does not import the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.train.request import TrainRequest, make_request
    from flowspec.train.session import RunResult, SweepRow, resume, sweep, train

__all__ = ["RunResult", "SweepRow", "TrainRequest", "make_request", "resume", "sweep", "train"]
_LAZY = {"TrainRequest": "request", "make_request": "request", "RunResult": "session",
         "SweepRow": "session", "resume": "session", "sweep": "session", "train": "session"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"flowspec.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'flowspec.train' has no attribute {name!r}")
