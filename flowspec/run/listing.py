"""Run directories as a user sees them: their status, and which one a path means.

The trainer records each run's state in ``RUN/status.json`` (written atomically at
start, while training, and when the run finishes, is interrupted, diverges or
fails). Everything here reads only that file, the run's directory listing and the
JSON header of its ``.safetensors`` files, so listing runs never imports torch.

Resolution rules (what ``flowspec eval runs/<name>`` means):

* a ``.safetensors`` file is itself;
* a run directory gives its ``best`` checkpoint when it has one (chosen on the
  validation split), else ``last`` -- or what ``which`` asks for;
* ``runs/<name>`` (a folder of runs) gives the newest *finished* run; newer runs
  that are still going, were interrupted or diverged are named in the notes, never
  picked silently. :func:`resolve_resume` instead picks the newest run that can be
  continued.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowspec.errors import CheckpointError
from flowspec.run.layout import (
    BEST,
    LAST,
    RUN_JSON,
    WHICH,
    checkpoint_kind,
    checkpoint_path,
    is_run_dir,
)
from flowspec.run.status import (
    FINISHED,
    RUNNING,
    STOPPED,
    UNKNOWN,
    effective_status,
    read_status,
)


# -- checkpoint headers (no torch) ---------------------------------------------------------
def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file, read from its JSON header only."""
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    return header.get("__metadata__") or {}


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``info`` a flowspec checkpoint carries (step, epoch, metrics, seed); {} if none."""
    try:
        return json.loads(checkpoint_metadata(path).get("info", "{}"))
    except ValueError:
        return {}


# -- runs ------------------------------------------------------------------------------
def data_label(run_dir: str | os.PathLike) -> str | None:
    """What a run trained on, in a word: its data file's name (``heart.csv``) or its
    data set (``moons``); None when ``run.json`` does not say (energies, older runs)."""
    try:
        info = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    data = info.get("data") if isinstance(info, dict) else None
    if not isinstance(data, dict):
        return None
    files = ((data.get("file") or {}).get("files") or {})
    train = files.get("train") or next(iter(files.values()), None)
    if isinstance(train, dict) and train.get("path"):
        return Path(train["path"]).name
    return data.get("dataset")


@dataclass
class RunInfo:
    """One run directory, as ``flowspec runs`` lists it."""

    path: Path
    status: str
    step: int | None = None
    total: int | None = None
    #: {"metric": "nll_nats", "value": 2.41, "step": 300, "split": "val"}
    best: dict[str, Any] | None = None
    started: float | None = None
    updated: float | None = None
    elapsed_s: float | None = None
    message: str | None = None
    has_best: bool = False
    has_last: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    #: what it trained on (:func:`data_label`)
    data: str | None = None

    @property
    def name(self) -> str:
        return self.path.parent.name

    def progress(self) -> str:
        if self.step is None:
            return "?"
        return f"{self.step}/{self.total}" if self.total else str(self.step)

    def describe(self) -> str:
        """``interrupted at step 120/300`` and the like."""
        where = f" at step {self.progress()}" if self.step is not None else ""
        text = {RUNNING: "still running", STOPPED: "stopped without finishing (killed?)",
                UNKNOWN: "of unknown status (no status.json)"}.get(self.status, self.status)
        return text + (where if self.status != FINISHED else f" ({self.progress()} steps)")

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.name, "status": self.status,
                "step": self.step, "total": self.total, "best": self.best,
                "started": self.started, "updated": self.updated, "elapsed_s": self.elapsed_s,
                "message": self.message, "has_best": self.has_best, "has_last": self.has_last,
                "data": self.data}


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    """Status, progress and best metric of one run directory."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    info = RunInfo(path=run_dir, status=effective_status(status) if status else UNKNOWN,
                   step=status.get("step"), total=status.get("total"), best=status.get("best"),
                   started=status.get("started"), updated=status.get("updated"),
                   elapsed_s=status.get("elapsed_s"), message=status.get("message"),
                   has_best=(run_dir / BEST).is_file(),
                   has_last=(run_dir / LAST).is_file(), raw=status,
                   data=data_label(run_dir))
    if not status and info.has_last:  # an older run: read what its checkpoint says
        try:
            ck = checkpoint_info(run_dir / LAST)
        except CheckpointError:
            ck = {}
        info.step = ck.get("step")
        info.updated = (run_dir / LAST).stat().st_mtime
    return info


def list_runs(root: str | os.PathLike = "runs", name: str | None = None) -> list[RunInfo]:
    """Runs under ``root`` (``root/<name>/<run>``), oldest first; ``name`` picks one spec.

    ``root`` may itself be a folder of runs (``runs/<name>``) or one run directory.
    """
    root = Path(root)
    if is_run_dir(root):
        return [run_info(root)]
    if not root.is_dir():
        return []
    groups = [root / name] if name else sorted(p for p in root.iterdir() if p.is_dir())
    runs: list[RunInfo] = []
    for group in groups:
        if is_run_dir(group):  # root was already a folder of runs
            runs.append(run_info(group))
            continue
        if group.is_dir():
            runs.extend(run_info(d) for d in sorted(group.iterdir()) if is_run_dir(d))
    return runs


def _run_of_file(path: Path) -> RunInfo | None:
    return run_info(path.parent) if is_run_dir(path.parent) else None


@dataclass
class Resolved:
    """A checkpoint a command will use, and why that one."""

    checkpoint: Path
    which: str  # best | last | file
    run: RunInfo | None
    notes: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run is not None else None

    @property
    def step(self) -> int | None:
        try:
            return checkpoint_info(self.checkpoint).get("step")
        except CheckpointError:
            return None

    def describe(self) -> str:
        """``runs/x/2024.../best.safetensors (best, step 300)``."""
        step = self.step
        parts = [self.which] + ([f"step {step}"] if step is not None else [])
        if self.run is not None and self.run.status != FINISHED:
            parts.append(f"run {self.run.describe()}")
        return f"{self.checkpoint} ({', '.join(parts)})"


def _pick_in_run(run: RunInfo, which: str | None) -> Resolved:
    if which is not None and which not in WHICH:
        raise CheckpointError(f"--which must be best or last, got '{which}'")
    if which is None:
        if run.has_best:
            return Resolved(run.path / BEST, "best", run)
        if run.has_last:
            return Resolved(run.path / LAST, "last", run,
                            ["no best.safetensors in this run (no validation split chose one): "
                             "using last"])
    elif checkpoint_path(run.path, which).is_file():
        return Resolved(checkpoint_path(run.path, which), which, run)
    elif which == "best" and run.has_last:
        raise CheckpointError(
            f"{run.path}: no best.safetensors (best is chosen on the validation split; this "
            "run had none, or has not evaluated yet)", hint="use --which last")
    raise CheckpointError(f"{run.path}: no checkpoint yet ({run.describe()})",
                          hint="wait for the first epoch to end, or pass another run")


def resolve_run(path: str | os.PathLike, which: str | None = None) -> Resolved:
    """The checkpoint ``path`` means (see the module doc); raise :class:`CheckpointError`."""
    p = Path(path)
    if p.is_file():
        kind = checkpoint_kind(p)
        if which is not None and kind in WHICH and kind != which:
            raise CheckpointError(f"{p} is the {kind} checkpoint, but --which {which} was given",
                                  hint="pass the run directory, or drop --which")
        return Resolved(p, kind, _run_of_file(p))
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory",
                              hint="pass a checkpoint (.safetensors), a run directory or "
                                   "runs/<name>; `flowspec runs` lists them")
    if is_run_dir(p):
        return _pick_in_run(run_info(p), which)
    runs = list_runs(p)
    if not runs:
        raise CheckpointError(f"{p}: no runs in this directory",
                              hint="train first: flowspec train SPEC")
    usable = [r for r in runs if r.status in (FINISHED, UNKNOWN) and
              (r.has_best or r.has_last) and (which is None or
                                             checkpoint_path(r.path, which).is_file())]
    if not usable:
        listing = "; ".join(f"{r.path.name} {r.describe()}" for r in runs[-3:])
        raise CheckpointError(f"{p}: no finished run ({listing})",
                              hint=f"pass a run directory explicitly, e.g. {runs[-1].path}")
    chosen = usable[-1]
    resolved = _pick_in_run(chosen, which)
    why = f"the newest finished run of {len(runs)}" if len(runs) > 1 else "its only run"
    if chosen.status == UNKNOWN:
        why = "the newest run (written before status files; cannot tell if it finished)"
    on = f" on {chosen.data}" if chosen.data else ""
    resolved.notes.insert(0, f"{p} -> {chosen.path.name}{on}: {why}")
    others = sorted({r.data for r in runs if r.data and r.data != chosen.data})
    if others:
        resolved.notes.append(f"{p} also holds runs on other data ({', '.join(others)}); "
                              "pass a run directory to use one of them")
    for r in runs[runs.index(chosen) + 1:]:
        resolved.notes.append(f"not using the newer run {r.path} ({r.describe()}); pass it "
                              "explicitly to use it")
    return resolved


def resolve_resume(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """The run directory ``--resume path`` continues, and notes saying why that one.

    A run directory is itself; ``runs/<name>`` gives its newest run that did not finish
    (interrupted, diverged, failed, killed), else its newest run. A run still running
    (its process alive on this host) is refused: two trainers would share one directory.
    """
    p = Path(path)
    if p.is_file() and p.suffix == ".safetensors" and is_run_dir(p.parent):
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such run directory",
                              hint="pass the run directory printed by `flowspec train`, or "
                                   "runs/<name>; `flowspec runs` lists them")
    notes: list[str] = []
    if is_run_dir(p):
        run = run_info(p)
    else:
        runs = [r for r in list_runs(p) if r.has_last]
        if not runs:
            raise CheckpointError(f"{p}: no run with a checkpoint to resume",
                                  hint="train first: flowspec train SPEC")
        open_runs = [r for r in runs if r.status not in (FINISHED, RUNNING)]
        run = open_runs[-1] if open_runs else runs[-1]
        why = ("the newest run that did not finish" if open_runs else
               "the newest run (all finished: resuming continues it only if you raise "
               "train.steps or train.epochs)")
        notes.append(f"{p} -> {run.path.name}: {why}, {run.describe()}")
    if run.status == RUNNING:
        pid, host = run.raw.get("pid"), run.raw.get("host")
        raise CheckpointError(f"{run.path}: this run is still running (pid {pid} on {host})",
                              hint="stop it first (Ctrl-C checkpoints and stops)")
    if not run.has_last:
        raise CheckpointError(f"{run.path}: nothing to resume (no last.safetensors)",
                              hint="pass the run directory printed by `flowspec train`")
    return run.path, notes


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
