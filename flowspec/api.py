"""``flowspec.load``: one entry point for specs and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowspec.checkpoint import read_checkpoint
from flowspec.compile import Flow
from flowspec.errors import CheckpointError


def is_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix == ".safetensors" or p.is_dir()


def build_flow(spec: Any) -> Flow:
    """Compile a loaded :class:`~flowspec.spec.Spec` into a :class:`Flow` (spec attached)."""
    flow = Flow(spec.graph)
    flow.spec = spec
    flow.checkpoint_grads = bool(spec.train.get("checkpoint_grads", False))
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
    *finished* run, see :func:`flowspec.runs.resolve_run`; a newer unfinished run
    is named in a warning, never picked). The EMA weights are used when the run
    kept them (``ema=False`` for the raw weights). The returned flow is in eval mode.
    """
    from flowspec.spec import load_spec

    if not isinstance(source, dict) and is_checkpoint(source):
        from flowspec.runs import resolve_run

        resolved = resolve_run(source, which if Path(source).is_dir() else None)
        if any(note.startswith("not using") for note in resolved.notes):
            import warnings

            warnings.warn("; ".join(resolved.notes), stacklevel=2)
        ckpt = read_checkpoint(resolved.checkpoint)
        spec = load_spec(ckpt["spec"], overrides)
        flow = build_flow(spec)
        state = ckpt["ema"] if (ema and ckpt["ema"] is not None) else ckpt["state"]
        missing, unexpected = flow.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: weights do not match the spec stored in the checkpoint "
                f"(missing {len(missing)}, unexpected {len(unexpected)}: "
                f"{', '.join((missing + unexpected)[:3])}...)",
                hint="overrides that change the architecture cannot be applied to a checkpoint")
        flow.checkpoint_info = ckpt["info"]
        return flow.eval()
    return build_flow(load_spec(source, overrides, quick=quick)).eval()
