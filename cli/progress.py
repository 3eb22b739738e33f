"""The training progress bar for terminals (pipes and logs get plain lines instead).

Two lines, so nothing important is squeezed out of an 80-column terminal: the bar
line keeps the step count, elapsed time and ETA (the bar itself shrinks first), and
a status line under it shows the latest metrics with their units (truncated with an
ellipsis rather than wrapped). The bar moves every step: the loop reports the step
number alone, and metrics only every ``log_every`` steps.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from flowspec.train.report import Reporter, format_metrics


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def status_line(metrics: dict[str, Any], loss_unit: str) -> str:
    """``loss 1.234 nats/dim · 2.07 bits/dim · lr 0.001 · 4305 ex/s`` (units spelled out)."""
    from flowspec.objectives.base import progress_metrics

    parts = []
    if "loss" in metrics:
        parts.append(f"loss {_fmt(metrics['loss'])} {loss_unit}".rstrip())
    for m in progress_metrics():  # each objective's metrics, as it names them, with units
        if m.name in metrics:
            parts.append(" ".join(p for p in (m.short, _fmt(metrics[m.name]), m.unit) if p))
    if "examples_per_s" in metrics:
        parts.append(f"{metrics['examples_per_s']:.0f} ex/s")
    if "lr" in metrics:
        parts.append(f"lr {metrics['lr']:.3g}")
    return " · ".join(parts)


class _TwoLineProgress(Progress):
    status = ""

    def get_renderables(self):
        table = self.make_tasks_table(self.tasks)
        line = Text(self.status, no_wrap=True, overflow="ellipsis", style="dim")
        yield Group(table, line) if self.status else table


class RichReporter(Reporter):
    """A progress bar with step count and ETA, and a line of metrics with units."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = _TwoLineProgress(
            TextColumn("[bold blue]train", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5)),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
            TextColumn("eta", table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            console=console, transient=False, expand=True,
        )
        self.task: Any = None
        self.loss_unit = ""

    def start(self, *, run_dir, total_steps, start_step, steps_per_epoch, device,
              loss_unit=""):
        self.loss_unit = loss_unit
        self.console.print(f"run dir [bold]{run_dir}[/] · {total_steps} steps "
                           f"({steps_per_epoch}/epoch) on {device}"
                           + (f" · resuming at step {start_step}" if start_step else "")
                           + (f" · loss in {loss_unit}" if loss_unit else ""))
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step)

    def step(self, step):
        self.progress.update(self.task, completed=step)

    def log(self, step, metrics):
        self.progress.status = status_line(metrics, self.loss_unit)
        self.progress.update(self.task, completed=step)

    def epoch(self, epoch, metrics, split="test"):
        where = f" (step {metrics['step']})" if "step" in metrics else ""
        self.progress.console.print(f"epoch {epoch}{where} {split}: {format_metrics(metrics)}")

    def message(self, text):
        self.progress.console.print(text)

    def warning(self, text):
        self.progress.console.print(f"[bold yellow]warning[/]: {text}")

    def close(self):
        self.progress.refresh()
        self.progress.stop()
