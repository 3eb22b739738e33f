"""Dataset and preprocessing registries (filled by the modules of this package)."""

from __future__ import annotations

from flowspec.registry import Registry

DATASETS = Registry("dataset", plugin_group="flowspec.datasets")
PREPROCESS = Registry("preprocessing step")
