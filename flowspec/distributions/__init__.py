"""Priors. Every module in this package registers its priors on import."""

from __future__ import annotations

import importlib
import pkgutil

from flowspec.distributions.base import PRIORS, Prior

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["PRIORS", "Prior"]
