"""Progress reporting for the training loop. The CLI plugs in a rich progress bar;
the library default prints plain lines (good for logs and non-TTY output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_metrics(metrics: dict[str, Any]) -> str:
    order = ["loss", "nll_nats", "bits_per_dim", "nll_minus_entropy", "kl_nats", "ess",
             "free_energy", "beta", "lr", "grad_norm", "examples_per_s"]
    keys = [k for k in order if k in metrics]
    parts = []
    for k in keys:
        v = metrics[k]
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


class Reporter:
    """Receives the loop's events; subclasses decide how to show them."""

    def start(self, *, run_dir: Path, total_steps: int, start_step: int,
              steps_per_epoch: int, device: str) -> None: ...

    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def epoch(self, epoch: int, metrics: dict[str, Any], split: str = "test") -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainReporter(Reporter):
    def __init__(self, print_fn=print):
        self.print = print_fn
        self.total = 0

    def start(self, *, run_dir, total_steps, start_step, steps_per_epoch, device):
        self.total = total_steps
        what = f"resuming at step {start_step}" if start_step else "training"
        self.print(f"{what}: {total_steps} steps ({steps_per_epoch}/epoch) on {device}; "
                   f"run dir {run_dir}")

    def log(self, step, metrics):
        self.print(f"step {step}/{self.total} {format_metrics(metrics)}")

    def epoch(self, epoch, metrics, split="test"):
        self.print(f"epoch {epoch} {split}: {format_metrics(metrics)}")

    def message(self, text):
        self.print(text)


class SilentReporter(Reporter):
    pass
