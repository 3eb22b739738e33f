"""Bijector nodes. Every module in this package registers its nodes on import."""

from __future__ import annotations

import importlib
import pkgutil

from flowspec.bijectors.base import NODES, Bijector, Shape

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["NODES", "Bijector", "Shape"]
