"""Checkpoints: one self-describing ``.safetensors`` file per model, no pickle.

The weights are the tensors; the resolved spec, the format version and a few
facts (step, epoch, metrics) are the file's string metadata, so
``flowspec.load(path)`` rebuilds the exact flow from the file alone. Training
state that only resuming needs (optimizer moments, RNG states, loop counters)
goes in a sibling ``*.state.safetensors`` file. Every write is atomic: a temp
file in the same directory, fsync, then rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowspec.errors import CheckpointError

FORMAT = "flowspec-checkpoint"
FORMAT_VERSION = "1"
EMA_PREFIX = "ema::"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike,
    model_state: dict[str, torch.Tensor],
    spec_yaml: str,
    *,
    ema_state: dict[str, torch.Tensor] | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Write weights (+ optional EMA weights) with the resolved spec in the metadata."""
    tensors = dict(model_state)
    if ema_state is not None:
        tensors.update({EMA_PREFIX + k: v for k, v in ema_state.items()})
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec_yaml,
        "info": json.dumps(info or {}),
    }
    _atomic_save(tensors, Path(path), metadata)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint",
                              hint="pass a .safetensors file or a run directory")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})",
                              hint="the file is corrupt or truncated; use best.safetensors "
                                   "or re-run training with --resume") from None
    return tensors, metadata


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a model checkpoint: ``{"spec": yaml, "state": ..., "ema": ... | None, "info": ...}``."""
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format") != FORMAT or "spec" not in meta:
        raise CheckpointError(f"{path}: not a flowspec checkpoint (no spec in its metadata)",
                              hint="checkpoints are written by `flowspec train`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format_version')} is not supported "
            f"(this flowspec reads format {FORMAT_VERSION})")
    state = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    return {"spec": meta["spec"], "state": state, "ema": ema or None,
            "info": json.loads(meta.get("info", "{}"))}


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Resume state: flat tensors plus a JSON blob for everything else."""
    _atomic_save(tensors, Path(path), {"format": FORMAT + "-state", "info": json.dumps(info)})


def read_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = _read(Path(path))
    if meta.get("format") != FORMAT + "-state":
        raise CheckpointError(f"{path}: not a flowspec training-state file")
    return tensors, json.loads(meta.get("info", "{}"))


def resolve_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """Accept a checkpoint file, a run directory, or ``runs/<name>`` (its newest run)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / f"{which}.safetensors").is_file():
            return p / f"{which}.safetensors"
        runs = sorted((d for d in p.iterdir() if (d / f"{which}.safetensors").is_file()),
                      key=lambda d: d.name)
        if runs:
            return runs[-1] / f"{which}.safetensors"
        raise CheckpointError(f"{p}: no {which}.safetensors in this directory or its runs",
                              hint="train first: flowspec train SPEC")
    raise CheckpointError(f"{p}: no such file or directory",
                          hint="pass a checkpoint (.safetensors) or a run directory")
