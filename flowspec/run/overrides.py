"""Overrides accepted when a run is resumed, and the record of them in the run directory.

(:mod:`flowspec.run.state` reads the run's consistent snapshot; this module decides
which ``--set`` a resume may apply to the spec it holds.)

A resumed run must stay the run it was: its architecture, data, batch size, seed and
schedule shape are fixed by the checkpoint. What may change is how long it runs, the
learning rate (the usual fix after a divergence), gradient clipping, whether the step
is torch.compiled (``--compile``: the same math), and how often it logs, evaluates,
samples and checkpoints. Each ``--set`` is checked on its own
against the resolved spec, so a refusal names the override that caused it (even
``vars.K=4``, which reaches the model through a variable).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from flowspec.errors import FlowspecError, Problem

#: dotted paths (of the resolved spec) a resume may change; ``*`` matches one segment
RESUMABLE = (
    "train.steps", "train.epochs", "train.optimizer.*.lr", "train.grad_clip",
    "train.log_every", "train.eval_every", "train.eval_batches", "train.sample_every",
    "train.checkpoint_every", "train.max_bad_steps", "train.early_stopping",
    "train.early_stopping.*", "train.log", "train.compile", "sample.n", "sample.temperature",
    "sample.seed",
)


def _allowed(path: str) -> bool:
    segs = path.split(".")
    for pattern in RESUMABLE:
        pat = pattern.split(".")
        if len(pat) == len(segs) and all(p in ("*", s) for p, s in zip(pat, segs)):
            return True
    return False


def _normalized(document: dict) -> dict:
    """The document with ``optimizer: adam`` written as ``{adam: {lr: 0.001}}``."""
    from flowspec.registry import split_named

    doc = json.loads(json.dumps(document))
    train = doc.get("train") or {}
    if "optimizer" in train:
        name, params = split_named(train["optimizer"])
        train["optimizer"] = {name: {"lr": 1e-3, **params}}
    return doc


def diff_paths(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``{dotted path: (old, new)}`` of every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out.update(diff_paths(old.get(key), new.get(key), path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = {}
        for i, (a, b) in enumerate(zip(old, new)):
            out.update(diff_paths(a, b, f"{prefix}.{i}"))
        return out
    return {} if old == new else {prefix: (old, new)}


def apply_resume_overrides(spec_yaml: str, overrides: list[str] | None, run_dir: Path,
                           step: int | None = None) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    """``(spec, changes)``: the run's spec with ``overrides`` applied, and what changed.

    ``changes`` maps dotted paths to ``(old, new)``; a changed learning rate is also
    under ``"lr"``. Raises one :class:`FlowspecError` listing every refused override.
    """
    from flowspec.spec import load_spec_text as load_spec

    base = load_spec(spec_yaml)
    if not overrides:
        return base, {}
    old_doc = _normalized(base.document)
    problems = []
    for text in overrides:
        changed = diff_paths(old_doc, _normalized(load_spec(spec_yaml, [text]).document))
        refused = sorted(p for p in changed if not _allowed(p))
        if refused:
            shown = ", ".join(refused[:4]) + (" ..." if len(refused) > 4 else "")
            problems.append(Problem(
                f"--set {text}: cannot be changed when resuming (it changes {shown})",
                hint=None if problems else
                "a resumed run keeps its model, data, batch size, seed and schedule; start a "
                "new run for that. Resumable: " + ", ".join(RESUMABLE)))
    spec = load_spec(spec_yaml, overrides)
    changes = diff_paths(old_doc, _normalized(spec.document))
    train = spec.train
    if "train.epochs" in changes and train.get("steps"):
        problems.append(Problem(
            f"train.epochs has no effect: this run counts steps (train.steps: "
            f"{train['steps']})", hint="set the length with --set train.steps=N"))
    if "train.steps" in changes and step is not None and train["steps"] is not None \
            and train["steps"] < step:
        problems.append(Problem(f"train.steps={train['steps']} is before the run's current "
                                f"step {step}", hint="give a larger train.steps"))
    if problems:
        raise FlowspecError(problems)
    lr = [v for p, v in changes.items() if p.startswith("train.optimizer.") and p.endswith(".lr")]
    if lr:
        changes["lr"] = lr[0]
    return spec, changes


def record_resume(run_dir: Path, step: int, overrides: list[str],
                  changes: dict[str, tuple[Any, Any]], spec_yaml: str) -> None:
    """Append the resume's overrides and what they changed to ``RUN/resumes.jsonl``; when
    the spec changed, ``RUN/spec.yaml`` becomes the new resolved spec (the state files'
    spec digest is checked against it) and the first one is kept as
    ``RUN/spec.initial.yaml``."""
    from flowspec.checkpoint import atomic_write_bytes
    from flowspec.oserrors import write_error
    from flowspec.run.layout import RESUMES, SPEC, SPEC_INITIAL

    run_dir = Path(run_dir)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step,
             "overrides": list(overrides),
             "changes": {k: list(v) for k, v in changes.items() if k != "lr"},
             "argv": sys.argv}
    try:
        if changes:
            first = run_dir / SPEC_INITIAL
            if not first.exists() and (run_dir / SPEC).is_file():
                atomic_write_bytes(first, (run_dir / SPEC).read_bytes())
            atomic_write_bytes(run_dir / SPEC, spec_yaml.encode())
        with open(run_dir / RESUMES, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
    except OSError as err:
        raise write_error(run_dir / RESUMES, err) from None
