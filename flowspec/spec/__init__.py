"""The spec layer: YAML with source positions -> sugar expansion -> validation -> Graph IR.

``load_spec`` is the one entry point; ``spec_schema`` exports the JSON Schema
editors use. See docs/spec-language.md for the language itself.
"""

from __future__ import annotations

from flowspec.spec.load import Spec, load_spec, load_spec_text
from flowspec.spec.schema import spec_schema

__all__ = ["Spec", "load_spec", "load_spec_text", "spec_schema"]
