"""Resuming a run directory: read one consistent snapshot, refuse what does not belong.

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
from pathlib import Path
from typing import Any

from flowspec.checkpoint import (
    atomic_write_bytes,
    check_finite,
    parse_info,
    read_checkpoint,
    read_metadata,
    read_state,
)
from flowspec.errors import CheckpointError

STATE_FILE = "last.state.safetensors"
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
    run_json = run_dir / "run.json"
    if run_id and run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded and recorded != run_id:
            raise _foreign(run_dir, f"run id {run_id[:8]}, but run.json says {recorded[:8]}")
    digest = info.get("spec_sha256")
    spec_file = run_dir / "spec.yaml"
    if digest and spec_file.is_file():
        try:
            on_disk = spec_digest(spec_file.read_text())
        except OSError:
            on_disk = digest
        if on_disk != digest:
            raise _foreign(run_dir, "its spec differs from this run's spec.yaml")
    last = run_dir / "last.safetensors"
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
        what = "no last.safetensors" if not (run_dir / "last.safetensors").is_file() else \
            f"no {STATE_FILE}"
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
        ckpt = read_checkpoint(run_dir / "last.safetensors")
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
    path = run_dir / "best.safetensors"
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
