"""flowspec: a declarative compiler for normalizing flows.

``flowspec.load(spec_or_checkpoint)`` returns a :class:`Flow`. Direction
convention: ``Flow.forward`` maps data to latents, ``Flow.inverse`` latents to
data; both return ``(output, log|det J|)`` of the map applied.
"""

from __future__ import annotations

from flowspec.api import load
from flowspec.compile import Flow
from flowspec.errors import FlowspecError

__version__ = "0.1.0"
__all__ = ["Flow", "FlowspecError", "load", "__version__"]
