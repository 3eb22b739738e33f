"""A run's checkpoints and resume state: write one consistent snapshot, read it back,
refuse what does not belong.

The trainer's state file (``last.state.safetensors``) is the unit of resumption:
it holds the weights, the EMA weights, the optimizer and scheduler state, the
loop counters and the resolved spec, and it is written last, atomically, at every
checkpoint. Whatever was written before it (``last``/``best`` checkpoints, metric
rows) and is newer than it is replayed -- bit-exactly, since the data order and
the RNG are functions of ``(seed, step)`` -- by the resumed run.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowspec.checkpoint import (
    check_finite,
    clean_stale_temps,
    parse_info,
    read_checkpoint,
    read_metadata,
    read_state,
    save_checkpoint,
    save_state,
)
from flowspec.errors import CheckpointError
from flowspec.run.layout import BEST, LAST, RUN_JSON, SPEC, STATE

STATE_FILE = STATE
MODEL_PREFIX, EMA_PREFIX = "model/", "ema/"


def spec_digest(spec_yaml: str) -> str:
    return hashlib.sha256(spec_yaml.encode()).hexdigest()


def state_tensors(model: dict, ema: dict | None, optimizer: dict) -> dict:
    """The tensors of a state file: weights, EMA weights and optimizer state, prefixed."""
    out = {MODEL_PREFIX + k: v for k, v in model.items()}
    if ema is not None:
        out.update({EMA_PREFIX + k: v for k, v in ema.items()})
    out.update(optimizer)
    return out


def _split(tensors: dict) -> tuple[dict, dict, dict]:
    model, ema, rest = {}, {}, {}
    for k, v in tensors.items():
        if k.startswith(MODEL_PREFIX):
            model[k[len(MODEL_PREFIX):]] = v
        elif k.startswith(EMA_PREFIX):
            ema[k[len(EMA_PREFIX):]] = v
        else:
            rest[k] = v
    return model, ema, rest


def _foreign(run_dir: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{run_dir / STATE_FILE}: this training state belongs to another run ({what})",
        hint="resume the run directory the state file was written in; state files cannot "
             "be copied between runs")


def _check_identity(run_dir: Path, info: dict) -> None:
    """The state file must belong to this run directory (run id, spec)."""
    run_id = info.get("run_id")
    run_json = run_dir / RUN_JSON
    if run_id and run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded and recorded != run_id:
            raise _foreign(run_dir, f"run id {run_id[:8]}, but run.json says {recorded[:8]}")
    digest = info.get("spec_sha256")
    spec_file = run_dir / SPEC
    if digest and spec_file.is_file():
        try:
            on_disk = spec_digest(spec_file.read_text())
        except OSError:
            on_disk = digest
        if on_disk != digest:
            raise _foreign(run_dir, "its spec differs from this run's spec.yaml")
    last = run_dir / LAST
    if run_id and last.is_file():
        try:
            other = parse_info(last, read_metadata(last)).get("run_id")
        except CheckpointError:
            other = None  # a damaged last.safetensors is rewritten by the resumed run
        if other and other != run_id:
            raise _foreign(run_dir, f"run id {run_id[:8]}, but last.safetensors has "
                                    f"{other[:8]}")


def read_resume(run_dir: Path) -> dict[str, Any]:
    """``{"spec", "ckpt": {"spec", "state", "ema"}, "state": optimizer tensors, "info"}``."""
    from flowspec.api import stored_spec

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory",
                              hint="pass the run directory printed by `flowspec train`")
    path = run_dir / STATE_FILE
    if not path.is_file():
        what = f"no {LAST}" if not (run_dir / LAST).is_file() else f"no {STATE_FILE}"
        raise CheckpointError(f"{run_dir}: nothing to resume ({what})",
                              hint="pass the run directory printed by `flowspec train`")
    tensors, info = read_state(path)
    for key in ("step", "best", "seed", "optimizer", "scheduler"):
        if key not in info:
            raise CheckpointError(f"{path}: the training state lacks '{key}'",
                                  hint="the file was altered or written by another program")
    model, ema, optim = _split(tensors)
    if "spec" in info and model:
        spec_yaml = info["spec"]
    else:  # older state files hold only the optimizer state: the weights come from last
        ckpt = read_checkpoint(run_dir / LAST)
        if ckpt["info"].get("step") != info["step"]:
            raise CheckpointError(
                f"{run_dir}: last.safetensors is at step {ckpt['info'].get('step')} but "
                f"{STATE_FILE} at step {info['step']} (a save was interrupted)",
                hint="this run was written by an older flowspec and cannot be resumed "
                     "consistently; start a new run from its spec.yaml")
        spec_yaml, model, ema = ckpt["spec"], ckpt["state"], ckpt["ema"] or {}
    _check_identity(run_dir, info)
    check_finite(model, f"{path} (weights)")
    check_finite(ema, f"{path} (EMA weights)")
    return {"spec": stored_spec(spec_yaml, path), "info": info, "state": optim,
            "ckpt": {"spec": spec_yaml, "state": model, "ema": ema or None}}


def best_so_far(run_dir: Path, best: float, step: int, key: str) -> float:
    """``best``, or the metric of a ``best.safetensors`` written after the state file by an
    interrupted save (so a resumed run only replaces it with a better one)."""
    path = run_dir / BEST
    if not path.is_file():
        return best
    try:
        info = parse_info(path, read_metadata(path))
    except CheckpointError:
        return best
    value = (info.get("metrics") or {}).get(key)
    if info.get("step", -1) > step and isinstance(value, (int, float)) and math.isfinite(value):
        return min(best, float(value))
    return best


@dataclass
class Resumed:
    """What a resume continues: the run's snapshot with the resume's overrides applied."""

    run_dir: Path
    #: the spec to train on (the stored one, with the overrides)
    spec: Any
    #: that spec as YAML (the stored text itself when nothing changed)
    spec_yaml: str
    #: the state file's info: step, best, seed, run id, optimizer and scheduler state
    info: dict[str, Any]
    #: weights, EMA weights (or None) and optimizer tensors
    weights: dict[str, Any]
    ema: dict[str, Any] | None
    optimizer: dict[str, Any]
    #: the resume's ``--set`` strings, and ``{dotted path: (old, new)}`` they changed
    overrides: list[str]
    changes: dict[str, tuple[Any, Any]]


def open_resume(run_dir: str | Path, overrides: list[str] | None = None) -> Resumed:
    """One consistent snapshot from the run's state file (:func:`read_resume`), with the
    resume ``overrides`` applied to its spec (only the keys :mod:`flowspec.run.overrides`
    allows). The trainer and ``--print-spec`` both read a resume through this."""
    from flowspec.run.overrides import apply_resume_overrides

    run_dir = Path(run_dir)
    resumed = read_resume(run_dir)
    stored = resumed["ckpt"]["spec"]
    spec, changes = apply_resume_overrides(stored, overrides, run_dir,
                                           step=resumed["info"].get("step"))
    return Resumed(run_dir=run_dir, spec=spec if changes else resumed["spec"],
                   spec_yaml=spec.to_yaml() if changes else stored, info=resumed["info"],
                   weights=resumed["ckpt"]["state"], ema=resumed["ckpt"]["ema"],
                   optimizer=resumed["state"], overrides=list(overrides or []),
                   changes=changes)


# -- writing -----------------------------------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as flat tensors and a JSON-able rest (param groups, scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{idx}/{k}"] = v
            else:
                scalars[f"{idx}/{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    """The inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim/"):
            _, idx, k = key.split("/", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in info["scalars"].items():
        idx, k = key.split("/", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save_snapshot(run_dir: Path, *, weights: dict, ema: dict | None, spec_yaml: str,
                  info: dict[str, Any], is_best: bool, state: dict[str, Any],
                  optimizer: torch.optim.Optimizer) -> None:
    """``best`` (when ``is_best``), ``last``, then the resume state -- last, as the commit
    point: it alone holds everything a resume needs (weights, EMA, optimizer, counters,
    spec, and ``state``: scheduler, best, grad scaler), so a kill at any moment leaves a
    consistent snapshot. ``info`` (step, epoch, metrics, seed, run id) goes in all three."""
    info = {**info, "spec_sha256": spec_digest(spec_yaml)}
    clean_stale_temps(run_dir)
    if is_best:
        save_checkpoint(run_dir / BEST, weights, spec_yaml, ema_state=ema, info=info)
    save_checkpoint(run_dir / LAST, weights, spec_yaml, ema_state=ema, info=info)
    opt_tensors, opt_info = optimizer_tensors(optimizer)
    save_state(run_dir / STATE_FILE, state_tensors(weights, ema, opt_tensors),
               {**info, **state, "optimizer": opt_info, "spec": spec_yaml})
