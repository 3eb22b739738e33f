"""Conditioner networks. Every module in this package registers its nets on import."""

from __future__ import annotations

import importlib
import pkgutil

from flowspec.nets.base import NETS, build_net

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["NETS", "build_net"]
