"""``RUN/metrics.jsonl``: one JSON row per training log or evaluation, read back.

The sinks (:mod:`flowspec.run.sinks`) append rows while a run trains; resuming
drops the rows past the resumed step (they are replayed); a sweep reads the last
test evaluation of each of its runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowspec.checkpoint import atomic_write_bytes
from flowspec.run.layout import METRICS


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS


def read_rows(run_dir: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The run's metric rows (of ``split`` only, if given); torn or unreadable lines skipped."""
    rows = []
    try:
        lines = metrics_path(run_dir).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and (split is None or row.get("split") == split):
            rows.append(row)
    return rows


def last_row(run_dir: str | Path, split: str) -> dict[str, Any]:
    """The last row of ``split`` ({} if none)."""
    rows = read_rows(run_dir, split)
    return rows[-1] if rows else {}


def truncate_metrics(path: Path, step: int) -> int:
    """Drop metric rows past ``step`` (they are replayed) and any torn last line, atomically;
    -> rows dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)) \
                and row["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    return dropped
