"""flowspec: a declarative compiler for normalizing flows.

``flowspec.load(spec_or_checkpoint)`` returns a :class:`Flow`. Direction
convention: ``Flow.forward`` maps data to latents, ``Flow.inverse`` latents to
data; both return ``(output, log|det J|)`` of the map applied.

``load`` and ``Flow`` are imported on first use, so ``import flowspec.errors`` (the
CLI's ``--help``, ``runs``, ``--version``) does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowspec.errors import FlowspecError

__version__ = "0.1.0"
__all__ = ["Flow", "FlowspecError", "load", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.api import load
    from flowspec.compile import Flow

_LAZY = {"load": "flowspec.api", "Flow": "flowspec.compile"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowspec' has no attribute {name!r}")
