"""Where metric rows go: ``metrics.jsonl`` always, plus CSV and TensorBoard on request.

``train.log: [jsonl, csv, tensorboard]`` picks the sinks. Every row the trainer
records (a training log row, or an evaluation on ``val``/``test``) goes to each sink
with its split. ``metrics.jsonl`` is the run's own record (``flowspec runs`` and
resuming read the run directory, never a sink), so it is written whatever the list
says. TensorBoard needs the optional ``tensorboard`` package (``pip install
tensorboard``, or the ``flowspec[tensorboard]`` extra); it is imported only when
asked for, and a missing package is reported before training starts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from flowspec.errors import FlowspecError
from flowspec.run.layout import METRICS, METRICS_CSV_DIR, TENSORBOARD_DIR

SINKS = ("jsonl", "csv", "tensorboard")


class JsonlSink:
    """``RUN/metrics.jsonl``: one JSON object per row, ``{"split": ..., **row}``."""

    def __init__(self, run_dir: Path):
        self._fh = (Path(run_dir) / METRICS).open("a")

    def write(self, split: str, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps({"split": split, **row}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class CsvSink:
    """``RUN/metrics/<split>.csv``, one file per split (their columns differ).

    The header is the union of the keys seen so far; a row with a new key (a metric
    that appears later, such as ``grad_norm``) rewrites the file with the wider
    header once, so every column stays aligned. Resuming appends to the same files.
    """

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / METRICS_CSV_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self._columns: dict[str, list[str]] = {}

    def _path(self, split: str) -> Path:
        return self.folder / f"{split}.csv"

    def _read_columns(self, split: str) -> list[str]:
        if split not in self._columns:
            path = self._path(split)
            cols: list[str] = []
            if path.is_file() and path.stat().st_size:
                with path.open(newline="") as fh:
                    cols = next(csv.reader(fh), [])
            self._columns[split] = cols
        return self._columns[split]

    def write(self, split: str, row: dict[str, Any]) -> None:
        path, cols = self._path(split), self._read_columns(split)
        new = [k for k in row if k not in cols]
        if new:
            old_rows = []
            if cols:
                with path.open(newline="") as fh:
                    old_rows = list(csv.DictReader(fh))
            cols = self._columns[split] = cols + new
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=cols)
                writer.writeheader()
                writer.writerows(old_rows)
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=cols).writerow(row)

    def close(self) -> None:
        pass


class TensorBoardSink:
    """``RUN/tensorboard/``: every numeric value as a scalar ``<split>/<key>`` at its step."""

    def __init__(self, run_dir: Path):
        SummaryWriter = _summary_writer()
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR),
                                    flush_secs=10)

    def write(self, split: str, row: dict[str, Any]) -> None:
        step = int(row.get("step", 0))
        for key, value in row.items():
            if key in ("step", "epoch") and split == "train":
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _summary_writer():
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it, and says so only late)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FlowspecError(
            "train.log asks for tensorboard, but the 'tensorboard' package is not installed",
            hint="pip install tensorboard (or pip install 'flowspec[tensorboard]'), or remove "
                 "tensorboard from train.log") from None
    return SummaryWriter


def check_sinks(kinds: list[str] | None) -> None:
    """Fail before training starts if a requested sink cannot work."""
    for kind in kinds or ():
        if kind not in SINKS:
            raise FlowspecError(f"train.log: unknown sink '{kind}'",
                                hint="choose from " + ", ".join(SINKS))
    if "tensorboard" in (kinds or ()):
        _summary_writer()


def open_sinks(run_dir: Path, kinds: list[str] | None) -> list[Any]:
    """The sinks of ``train.log``; ``metrics.jsonl`` is always among them."""
    kinds = list(kinds or ())
    sinks: list[Any] = [JsonlSink(run_dir)]
    if "csv" in kinds:
        sinks.append(CsvSink(run_dir))
    if "tensorboard" in kinds:
        sinks.append(TensorBoardSink(run_dir))
    return sinks
