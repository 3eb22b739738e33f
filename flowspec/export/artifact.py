"""``export_flow``: a trained flow -> a directory of self-contained programs, checked.

Each program (``log_prob``, ``sample``; see :mod:`flowspec.export.programs`) is
traced with a dynamic batch dimension and written as ONNX (``.onnx``, one file,
weights inside) or a ``torch.export`` program (``.pt2``). It is then loaded back
from the file and run on held-out inputs of another batch size than the traced
one; the largest differences from the eager flow are reported, and
``manifest.json`` records the programs' inputs, outputs and those figures.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowspec.compile import Flow
from flowspec.errors import FlowspecError
from flowspec.export.capability import Blocker, blockers
from flowspec.export.heldout import CheckInputs, check_inputs
from flowspec.export.programs import PROGRAMS

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
WHAT = {"log_prob": ("log_prob",), "sample": ("sample",), "both": ("log_prob", "sample")}
#: the batch size programs are traced at (not 1: exporters specialise a dimension of 1)
TRACE_BATCH = 2


@dataclass
class ProgramReport:
    """One program: where it went and how far it is from the eager flow."""

    program: str
    path: Path
    max_abs_diff: float
    #: the largest |eager value| compared (log p of images is in the thousands)
    scale: float
    n: int

    @property
    def rel_diff(self) -> float:
        return self.max_abs_diff / max(1.0, self.scale)


@dataclass
class ExportReport:
    format: str
    directory: Path
    programs: list[ProgramReport] = field(default_factory=list)
    skipped: list[Blocker] = field(default_factory=list)
    inputs_source: str = ""


def _names(flow: Flow, program: str) -> tuple[list[str], list[str]]:
    first = "x" if program == "log_prob" else "noise"
    ins = [first] + (["context"] if flow.context_shape is not None else [])
    return ins, ["log_prob" if program == "log_prob" else "x"]


def _inputs(flow: Flow, program: str, data: CheckInputs, n: int | None = None) -> tuple:
    first = data.x if program == "log_prob" else data.noise
    args = (first,) if data.context is None else (first, data.context)
    return tuple(a[:n] if n is not None else a for a in args)


def _dynamic(args: tuple) -> tuple:
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in args)


def _trace(module: torch.nn.Module, args: tuple, program: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(module, args, dynamic_shapes=_dynamic(args))
    except Exception as err:  # noqa: BLE001 - exporter errors have no common base
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FlowspecError(f"torch.export could not trace {program}: {first}",
                            hint="report it: every node that declares its direction "
                                 "exportable should trace") from None


def _write(exported: Any, args: tuple, path: Path, fmt: str, names: tuple) -> None:
    if fmt == "torch-export":
        torch.export.save(exported, str(path))
        return
    import logging

    ins, outs = names
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = torch.onnx.export(exported, args, dynamo=True, input_names=ins,
                                output_names=outs, external_data=False, verbose=False)
    if onx is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise FlowspecError("the ONNX exporter returned nothing")
    onx.save(str(path))


def run_artifact(path: Path, args: tuple) -> torch.Tensor:
    """Run a written program (ONNX through onnxruntime, .pt2 through torch.export)."""
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise FlowspecError("checking an ONNX export needs onnxruntime",
                                hint="pip install 'flowspec[export]'") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: a.detach().cpu().numpy() for i, a in zip(sess.get_inputs(), args)}
        return torch.from_numpy(sess.run(None, feeds)[0])
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(*args)


def _shape_doc(flow: Flow, name: str) -> list[Any]:
    per = {"x": list(flow.input_shape), "noise": [flow.num_dims],
           "context": list(flow.context_shape or ()), "log_prob": []}[name]
    return ["batch", *per]


def export_flow(flow: Flow, out_dir: str | Path, *, fmt: str = "onnx", what: str = "both",
                data_dir: Any = None, n_check: int = 256) -> ExportReport:
    """Write ``what`` programs of ``flow`` in ``fmt`` to ``out_dir`` and check them.

    A program some node cannot export is skipped and its blockers are listed in the
    report (the caller decides whether that is an error); nothing is written for it.
    """
    if fmt not in FORMATS:
        raise FlowspecError(f"unknown export format '{fmt}'", hint="use onnx or torch-export")
    if what not in WHAT:
        raise FlowspecError(f"unknown program '{what}'", hint="use log_prob, sample or both")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FlowspecError(f"-o {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    flow = flow.eval().cpu().float()
    data = check_inputs(flow, n_check, data_dir)
    report = ExportReport(fmt, out, inputs_source=data.source)
    manifest: dict[str, Any] = {"flowspec_export": 1, "format": fmt,
                                "spec": getattr(flow.spec, "name", None),
                                "torch": torch.__version__, "programs": {},
                                "noise": [{"latent": lid, "shape": list(shape),
                                           "distribution": prior.noise}
                                          for lid, shape, prior in zip(
                                              flow.latent_names, flow.latent_shapes,
                                              flow.priors.values())],
                                "checked_on": data.source}
    for program in WHAT[what]:
        blocked = blockers(flow, program)
        if blocked:
            report.skipped.extend(blocked)
            continue
        module = PROGRAMS[program](flow).eval()
        args = _inputs(flow, program, data)
        with torch.no_grad():
            expected = module(*args)  # also fills the nodes' eval caches (inv_conv1x1)
            exported = _trace(module, _inputs(flow, program, data, TRACE_BATCH), program)
        path = out / f"{program}{FORMATS[fmt]}"
        names = _names(flow, program)
        _write(exported, _inputs(flow, program, data, TRACE_BATCH), path, fmt, names)
        got = run_artifact(path, args)
        diff = (got.float() - expected).abs()
        finite = torch.isfinite(expected)
        max_abs = float(diff[finite].max()) if finite.any() else float("nan")
        scale = float(expected[finite].abs().max()) if finite.any() else 0.0
        if bool((torch.isfinite(got) != finite).any()):
            max_abs = float("inf")  # a finite value became non-finite (or back)
        rep = ProgramReport(program, path, max_abs, scale, int(args[0].shape[0]))
        report.programs.append(rep)
        manifest["programs"][program] = {
            "file": path.name,
            "inputs": [{"name": nm, "shape": _shape_doc(flow, nm)} for nm in names[0]],
            "outputs": [{"name": nm, "shape": _shape_doc(flow, nm)} for nm in names[1]],
            "max_abs_diff": max_abs, "max_abs_eager": scale, "checked_rows": rep.n}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report
