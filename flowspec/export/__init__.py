"""Ship a trained flow: ``log_prob`` and ``sample`` as ONNX or torch.export programs."""

from flowspec.export.artifact import FORMATS, WHAT, ExportReport, export_flow, run_artifact
from flowspec.export.capability import Blocker, blockers, catalogue_markdown, catalogue_rows

__all__ = ["FORMATS", "WHAT", "Blocker", "ExportReport", "blockers", "catalogue_markdown",
           "catalogue_rows", "export_flow", "run_artifact"]
