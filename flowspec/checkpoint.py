"""Checkpoints: one self-describing ``.safetensors`` file per model, no pickle.

The weights are the tensors; the resolved spec, the format version and a few
facts (step, epoch, metrics) are the file's string metadata, so
``flowspec.load(path)`` rebuilds the exact flow from the file alone. Training
state that resuming needs goes in a sibling ``*.state.safetensors`` file that is
*complete on its own* (weights, EMA, optimizer, counters, spec): a run resumes
from that one file, so a kill between two writes can never mix steps.

Every file carries a sha256 digest of its tensors (names, dtypes, shapes, bytes)
that is verified on every read, so flipped bits are refused rather than loaded.
Every write is atomic: a temp file in the same directory, fsync, rename; temp
files a killed process left behind are removed by the next write of that file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from flowspec.errors import CheckpointError
from flowspec.oserrors import write_error

FORMAT = "flowspec-checkpoint"
FORMAT_VERSION = "2"
#: version 1 files (before digests) are still read, without a digest to verify.
READABLE_VERSIONS = ("1", "2")
EMA_PREFIX = "ema::"
_CORRUPT_HINT = ("the file is corrupt or truncated; use best.safetensors, or resume the run "
                 "(flowspec train --resume RUN) to rewrite it")


# -- digests and checks ------------------------------------------------------------------
def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding a NaN or an infinity."""
    # A sum is NaN/inf whenever an entry is (one read, no mask allocated); only when it
    # is -- or it overflowed -- is the exact per-entry check run.
    return [name for name, t in tensors.items()
            if t.is_floating_point() and t.numel()
            and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all())]


def _names(names: list[str], k: int = 3) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN/inf weights: a model with them only ever produces NaN."""
    bad = [n[len(EMA_PREFIX):] + " (EMA)" if n.startswith(EMA_PREFIX) else n
           for n in nonfinite_tensors(tensors)]
    if bad:
        raise CheckpointError(
            f"{where}: {len(bad)} tensor(s) hold NaN or infinite values: {_names(bad)}",
            hint="the run diverged before this file was written; use an earlier checkpoint "
                 "(best.safetensors) or retrain with a lower learning rate")


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` after :func:`check_weights`.

    Runs saved before the context standardization existed saw raw contexts: their
    missing ``context_standardizer`` buffers stay unfitted (the identity)."""
    own = module.state_dict()
    state = {**{k: v for k, v in own.items()
                if k.startswith("context_standardizer.") and k not in state}, **state}
    check_weights(module, state, where)
    module.load_state_dict(state)


def check_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Names and shapes of ``state`` must be those of ``module``'s; a clear error otherwise."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} is {list(state[k].shape)}, the spec makes {list(expected[k].shape)}"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) of the wrong shape ({_names(wrong, 2)})")
        if missing:
            parts.append(f"{len(missing)} missing ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        raise CheckpointError(
            f"{where}: the weights do not match the spec stored with them: " + "; ".join(parts),
            hint="the file was altered or mixed with another run's; overrides that change "
                 "the architecture cannot be applied to a checkpoint")


# -- writing -------------------------------------------------------------------------------
def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


#: safetensors itself writes through a ``.tmpXXXXXX`` file that a kill can leave behind
_SAFETENSORS_TEMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")


def clean_stale_temps(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temp files that a killed write left in ``directory``; -> the removed paths.

    With ``name``, only the temps of that file (``.NAME.*.tmp``). Without, every temp
    this module or safetensors creates (call it only on directories flowspec owns,
    such as run directories, where no other program writes).
    """
    directory = Path(directory)
    if name is not None:
        candidates = list(directory.glob(f".{name}.*.tmp"))
    else:
        candidates = [p for p in directory.glob(".*")
                      if (p.name.endswith(".tmp") and p.name.count(".") >= 3)
                      or _SAFETENSORS_TEMP.match(p.name)]
    removed = []
    for p in candidates:
        if p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename); user errors on failure."""
    path = Path(path)
    clean_stale_temps(path.parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path.parent, err, "create the directory", checkpoint=True) from None
    clean_stale_temps(path.parent, path.name)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {**metadata, "sha256": tensor_digest(tensors)}
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise write_error(path, err, checkpoint=True) from None
    try:
        save_file(tensors, tmp, metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err, checkpoint=True) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Resume state: flat tensors plus a JSON blob for everything else."""
    _atomic_save(tensors, Path(path), {"format": FORMAT + "-state",
                                       "format_version": FORMAT_VERSION,
                                       "info": json.dumps(info)})


# -- reading -------------------------------------------------------------------------------
def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint",
                              hint="pass a .safetensors file or a run directory")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})",
                              hint=_CORRUPT_HINT) from None
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})",
                              hint=_CORRUPT_HINT) from None


def _verify(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    version = meta.get("format_version", "1")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is not supported (this flowspec reads "
            f"formats {', '.join(READABLE_VERSIONS)})", hint="upgrade flowspec")
    if version == "1":
        return  # written before digests existed
    stored = meta.get("sha256")
    if stored is None:
        raise CheckpointError(f"{path}: the file has no digest to verify its tensors",
                              hint=_CORRUPT_HINT)
    if tensor_digest(tensors) != stored:
        raise CheckpointError(
            f"{path}: the tensors do not match the file's sha256 digest (bit rot, a partial "
            f"copy or an edit)", hint=_CORRUPT_HINT)


def parse_info(path: str | os.PathLike, meta: dict[str, str]) -> dict[str, Any]:
    """The JSON ``info`` metadata as a dict, or a clear error."""
    try:
        info = json.loads(meta.get("info", "{}"))
    except (json.JSONDecodeError, TypeError) as err:
        raise CheckpointError(f"{path}: the 'info' metadata is not valid JSON ({err})",
                              hint=_CORRUPT_HINT) from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: the 'info' metadata is not a JSON object",
                              hint=_CORRUPT_HINT)
    return info


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a model checkpoint: ``{"spec": yaml, "state": ..., "ema": ... | None, "info": ...}``.

    The digest is verified and NaN/inf weights are refused (naming the tensors).
    """
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format") != FORMAT or "spec" not in meta:
        raise CheckpointError(f"{path}: not a flowspec checkpoint (no spec in its metadata)",
                              hint="checkpoints are written by `flowspec train`")
    _verify(path, tensors, meta)
    info = parse_info(path, meta)
    check_finite(tensors, str(path))
    state = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    return {"spec": meta["spec"], "state": state, "ema": ema or None, "info": info}


def read_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format") != FORMAT + "-state":
        raise CheckpointError(f"{path}: not a flowspec training-state file",
                              hint="pass the run directory printed by `flowspec train`")
    _verify(path, tensors, meta)
    return tensors, parse_info(path, meta)
