"""The files of a run directory: the one place their names are written.

``<out>/<spec name>/<time>-<spec hash>/`` holds

* ``spec.yaml`` -- the resolved spec the run trains (``spec.initial.yaml``: the first
  one, kept when a resume changed it), ``overrides.json`` (the ``--set`` it was made
  with), ``run.json`` (seed, device, data record, versions, argv, run id);
* ``status.json`` -- running / finished / interrupted / diverged / failed, progress, best;
* ``metrics.jsonl`` -- one row per log and evaluation (``metrics/<split>.csv`` and
  ``tensorboard/`` on request);
* ``last.safetensors``, ``best.safetensors`` -- checkpoints (weights + spec), and
  ``last.state.safetensors`` -- the resume state, complete on its own;
* ``resumes.jsonl`` -- every resume's overrides and what they changed;
* ``samples/`` -- pictures drawn during training (and by ``flowspec sample``);
  ``trace/``, ``interpolations/``, ``manipulations/`` -- the CLI's other pictures.
"""

from __future__ import annotations

import os
from pathlib import Path

SPEC = "spec.yaml"
SPEC_INITIAL = "spec.initial.yaml"
OVERRIDES = "overrides.json"
RUN_JSON = "run.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
METRICS_CSV_DIR = "metrics"
TENSORBOARD_DIR = "tensorboard"
RESUMES = "resumes.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
STATE = "last.state.safetensors"
SAMPLES_DIR = "samples"
#: where the CLI's pictures of a trained run go (``flowspec trace``, ``interpolate``,
#: ``manipulate``); ``flowspec sample`` writes into :data:`SAMPLES_DIR`
TRACE_DIR = "trace"
INTERPOLATIONS_DIR = "interpolations"
MANIPULATIONS_DIR = "manipulations"
#: the checkpoints a run keeps, by the name users pick them with (``--which``)
WHICH = ("best", "last")


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    """``RUN/best.safetensors`` or ``RUN/last.safetensors``."""
    return Path(run_dir) / {"best": BEST, "last": LAST}[which]


def checkpoint_kind(path: str | os.PathLike) -> str:
    """``best`` / ``last`` for a run's checkpoint file, ``file`` for any other."""
    name = Path(path).name
    return next((w for w in WHICH if name == Path(checkpoint_path("", w)).name), "file")


def samples_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """The picture drawn at the end of ``epoch``."""
    return Path(run_dir) / SAMPLES_DIR / f"epoch_{epoch:04d}.png"


def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory a training run wrote (status, a checkpoint or its spec)."""
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in (STATUS, LAST, SPEC))
