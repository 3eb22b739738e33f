"""Says loudly when training waits for its data.

A split read on demand (:mod:`flowspec.data.loader`) logs, with every training row,
``loader_examples_per_s`` (what the loader can deliver) and ``data_wait`` (the share
of wall time the step waited for a batch). When the step waits more than
:data:`WAIT_SHARE` of the time, the loader is the bottleneck: the run says so, with
both rates and what to change, at most once every :data:`EVERY` logged rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowspec.train.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.train.loop import Trainer

#: waiting this share of the time or more is a bottleneck
WAIT_SHARE = 0.2
EVERY = 10


class LoaderWatch(Callback):
    """Warns when ``data_wait`` of a logged row exceeds :data:`WAIT_SHARE`."""

    def __init__(self) -> None:
        self._quiet = 0

    def after_log(self, t: Trainer, step: int, row: dict[str, Any]) -> None:
        wait = row.get("data_wait")
        if wait is None:
            return
        if self._quiet:
            self._quiet -= 1
            return
        if wait > WAIT_SHARE:
            workers = t.spec.data.get("workers") if t.spec.data else None
            t.reporter.warning(
                f"the data loader is the bottleneck: the training step waited for data "
                f"{100 * wait:.0f}% of the time (loader {row['loader_examples_per_s']:.0f} "
                f"examples/s, training {row.get('examples_per_s', 0.0):.0f} examples/s); raise "
                f"data.workers (now {'auto' if workers is None else workers}) or "
                "data.prefetch, or put the data on a faster disk")
            self._quiet = EVERY
