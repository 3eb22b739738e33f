"""``RUN/status.json``: the state of a run, as the trainer records it.

Written atomically at start, while training (every few seconds), and when the run
finishes, is interrupted, diverges or fails; read by ``flowspec runs`` and by
resume (early-stopping counters, best). Reading it never imports torch.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from flowspec.run.layout import STATUS

#: statuses the trainer writes
RUNNING, FINISHED, INTERRUPTED, DIVERGED, FAILED = (
    "running", "finished", "interrupted", "diverged", "failed")
#: a "running" status whose process is gone (killed, power loss) reads as this
STOPPED = "stopped"
#: a run directory written before status files existed
UNKNOWN = "unknown"


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``status.json`` as written ({} when absent or unreadable)."""
    try:
        return json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def write_status(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``status.json`` (atomically); stamps ``updated``, ``pid`` and
    ``host``. Returns the new content."""
    run_dir = Path(run_dir)
    data = read_status(run_dir)
    data.update(fields)
    data.update(updated=time.time(), pid=os.getpid(), host=socket.gethostname())
    _atomic_write_json(run_dir / STATUS, data)
    return data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


def effective_status(status: dict[str, Any]) -> str:
    """The recorded status, except that ``running`` on this host with a dead process is
    ``stopped`` (killed without a chance to record it)."""
    state = status.get("status", UNKNOWN)
    if state == RUNNING and status.get("host") == socket.gethostname():
        pid = status.get("pid")
        if isinstance(pid, int) and not _pid_alive(pid):
            return STOPPED
    return state
