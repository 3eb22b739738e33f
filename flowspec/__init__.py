"""flowspec: a declarative compiler for normalizing flows.

``flowspec.load(spec_or_checkpoint)`` returns a :class:`Flow`;
``flowspec.fit(spec, data)`` trains one on your array or file. Direction
convention: ``Flow.forward`` maps data to latents, ``Flow.inverse`` latents to
data; both return ``(output, log|det J|)`` of the map applied.

``load``, ``fit`` and ``Flow`` are imported on first use, so ``import flowspec.errors`` (the
CLI's ``--help``, ``runs``, ``--version``) does not pay for importing torch.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from flowspec.errors import FlowspecError

__version__ = "0.1.0"
__all__ = ["Flow", "FlowspecError", "fit", "load", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.api import load
    from flowspec.compile import Flow
    from flowspec.fit import fit

_LAZY = {"load": "flowspec.api", "Flow": "flowspec.compile", "fit": "flowspec.fit"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowspec' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Importing the submodule ``flowspec.fit`` sets the package attribute ``fit`` to the
    module; with ``fit`` imported lazily that would hide the function ``flowspec.fit``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
