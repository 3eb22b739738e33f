"""``flowspec.load``: one entry point for specs and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flowspec.checkpoint import load_weights, read_checkpoint
from flowspec.compile import Flow
from flowspec.errors import CheckpointError, FlowspecError, Problem, SpecError


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint file or a run directory (YAML text -- anything with a newline -- is
    never asked of the filesystem: a long spec is no valid path)."""
    if isinstance(path, str) and "\n" in path:
        return False
    p = Path(path)
    try:
        return p.suffix == ".safetensors" or p.is_dir()
    except OSError:  # e.g. a name too long for the filesystem: not a checkpoint
        return False


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FlowspecError("--device cuda was asked for, but no CUDA device is available",
                            hint="use --device cpu or auto")
    return torch.device(device)


def build_flow(spec: Any) -> Flow:
    """Compile a loaded :class:`~flowspec.spec.Spec` into a :class:`Flow` (spec attached)."""
    flow = Flow(spec.graph)
    flow.spec = spec
    flow.checkpoint_grads = bool(spec.train.get("checkpoint_grads", False))
    flow.memory = spec.train.get("memory", "none")
    if flow.memory == "invertible":
        import warnings

        from flowspec.memory import fallbacks

        for line in fallbacks(flow.node_items()):
            warnings.warn(line, stacklevel=2)
    return flow


def load(
    source: str | os.PathLike | dict,
    overrides: list[str] | dict | None = None,
    *,
    quick: bool = False,
    ema: bool = True,
    which: str = "last",
) -> Flow:
    """A spec (path, YAML text or dict) -> untrained Flow; a checkpoint -> trained Flow.

    For checkpoints, ``source`` may be the ``.safetensors`` file, a run directory
    (its ``which`` checkpoint: ``last`` or ``best``) or ``runs/<name>`` (its newest
    *finished* run, see :func:`flowspec.run.resolve_run`; a newer unfinished run
    is named in a warning, never picked). The EMA weights are used when the run
    kept them (``ema=False`` for the raw weights). The returned flow is in eval mode.
    """
    from flowspec.spec import load_spec

    if not isinstance(source, dict) and is_checkpoint(source):
        from flowspec.run.listing import resolve_run

        resolved = resolve_run(source, which if Path(source).is_dir() else None)
        if any(note.startswith("not using") for note in resolved.notes):
            import warnings

            warnings.warn("; ".join(resolved.notes), stacklevel=2)
        path = resolved.checkpoint
        ckpt = read_checkpoint(path)
        spec = stored_spec(ckpt["spec"], path, overrides)
        flow = build_flow(spec)
        use_ema = ema and ckpt["ema"] is not None
        load_weights(flow, ckpt["ema"] if use_ema else ckpt["state"],
                     f"{path}" + (" (EMA weights)" if use_ema else ""))
        flow.checkpoint_info = ckpt["info"]
        return flow.eval()
    return build_flow(load_spec(source, overrides, quick=quick)).eval()


def stored_spec(text: str, where: str | os.PathLike, overrides: Any = None) -> Any:
    """The spec stored in a checkpoint's metadata, loaded as YAML text (never as a path)."""
    from flowspec.spec import load_spec_text

    if not isinstance(text, str):
        raise CheckpointError(f"{where}: the stored spec is not text")
    try:
        return load_spec_text(text, overrides)
    except SpecError as err:
        if overrides:
            raise
        head = Problem(f"{where}: the spec stored in this file is not a valid spec",
                       hint="the file was altered or written by an incompatible flowspec")
        raise CheckpointError([head, *err.problems]) from None
