"""Target energies for reverse-KL training (filled in by the energies work)."""

from __future__ import annotations

from flowspec.registry import Registry

ENERGIES = Registry("energy", plugin_group="flowspec.energies")
