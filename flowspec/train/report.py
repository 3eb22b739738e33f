"""Progress reporting for the training loop.

The loop calls a :class:`Reporter`: ``step`` after every optimiser step (cheap: no
metric is computed for it), ``log`` every ``log_every`` steps with a row of
metrics, ``epoch`` after each evaluation, ``message``/``warning`` for events. The
CLI plugs in a rich progress bar on a terminal; everywhere else (pipes, cluster
logs, the library default) :class:`PlainReporter` writes one timestamped line per
record, never wrapped, so ``grep 'step '`` and ``awk`` work on the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: metrics of every run, shown around the objective's own (see :func:`summary_order`)
HEAD, TAIL = ["loss"], ["lr", "grad_norm", "examples_per_s", "loader_examples_per_s",
                        "data_wait"]


def summary_order() -> list[str]:
    """The order metrics are shown in: the loss, each registered objective's summary
    metrics as it declares them, then the optimiser's (others are left out of the
    one-line summaries)."""
    from flowspec.objectives import metric_order

    return HEAD + metric_order(summary_only=True) + TAIL


def format_metrics(metrics: dict[str, Any]) -> str:
    """``key=value`` pairs in a fixed order (4 significant digits), space-separated."""
    parts = []
    for k in summary_order():
        if k in metrics:
            v = metrics[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def summary_lines(metrics: dict[str, Any], split: str | None,
                  best: dict[str, Any] | None) -> list[str]:
    """The closing lines of a run, each saying which checkpoint its numbers belong to:
    the last evaluation (the ``last`` checkpoint) and the ``best`` one, which
    ``flowspec eval``/``sample`` use -- on a small table the two can differ by nats."""
    lines = []
    if metrics:
        where = ", ".join(p for p in (f"step {metrics['step']}" if "step" in metrics else "",
                                      split or "") if p)
        lines.append(f"last checkpoint ({where}): {format_metrics(metrics)}")
    if best is not None:
        lines.append(f"best checkpoint (step {best.get('step')}, {best.get('split')}): "
                     f"{best.get('metric')}={best['value']:.4g} -- used by flowspec eval "
                     "and sample")
    elif metrics:
        lines.append("no best checkpoint (no validation split chose one): flowspec eval and "
                     "sample use last")
    return lines


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Reporter:
    """Receives the loop's events; subclasses decide how to show them."""

    def start(self, *, run_dir: Path, total_steps: int, start_step: int,
              steps_per_epoch: int, device: str, loss_unit: str = "") -> None: ...

    def step(self, step: int) -> None:
        """Called after every optimiser step: keep it cheap."""

    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def epoch(self, epoch: int, metrics: dict[str, Any], split: str = "test") -> None: ...

    def message(self, text: str) -> None: ...

    def warning(self, text: str) -> None:
        self.message(f"warning: {text}")

    def close(self) -> None: ...


def _print_line(text: str) -> None:
    print(text, flush=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n"))


class PlainReporter(Reporter):
    """One line per record: ``2025-01-31T12:00:00 step 100/300 loss=1.23 ...``.

    Lines are written whole (no terminal width, no wrapping, flushed at once), so a
    log file or a pipe gets exactly one record per line. ``timestamps=False`` drops
    the time prefix.
    """

    def __init__(self, print_fn: Callable[[str], None] | None = None, timestamps: bool = True):
        self.print = print_fn or _print_line
        self.timestamps = timestamps
        self.total = 0

    def _emit(self, text: str) -> None:
        text = _one_line(text)
        self.print(f"{timestamp()} {text}" if self.timestamps else text)

    def start(self, *, run_dir, total_steps, start_step, steps_per_epoch, device,
              loss_unit=""):
        self.total = total_steps
        what = f"resuming at step {start_step}" if start_step else "training"
        unit = f"; loss in {loss_unit}" if loss_unit else ""
        self._emit(f"{what}: {total_steps} steps ({steps_per_epoch}/epoch) on {device}"
                   f"{unit}; run dir {run_dir}")

    def log(self, step, metrics):
        self._emit(f"step {step}/{self.total} {format_metrics(metrics)}")

    def epoch(self, epoch, metrics, split="test"):
        where = f" step {metrics['step']}/{self.total}" if "step" in metrics else ""
        self._emit(f"epoch {epoch}{where} {split}: {format_metrics(metrics)}")

    def message(self, text):
        self._emit(text)

    def warning(self, text):
        self._emit(f"WARNING: {text}")


class SilentReporter(Reporter):
    pass
