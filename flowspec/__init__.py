"""flowspec: a declarative compiler for normalizing flows.

``flowspec.load(spec_or_checkpoint)`` returns a :class:`Flow`;
``flowspec.fit(spec, data)`` trains one on your array or file. Direction
convention: ``Flow.forward`` maps data to latents, ``Flow.inverse`` latents to
data; both return ``(output, log|det J|)`` of the map applied.
"""

from __future__ import annotations

from flowspec.api import load
from flowspec.compile import Flow
from flowspec.errors import FlowspecError
from flowspec.fit import fit

__version__ = "0.1.0"
__all__ = ["Flow", "FlowspecError", "fit", "load", "__version__"]
