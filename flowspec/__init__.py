"""flowspec: a declarative compiler for normalizing flows."""

from __future__ import annotations

__version__ = "0.1.0"
