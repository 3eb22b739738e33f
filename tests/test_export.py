"""Exported flows (ONNX through onnxruntime, torch.export) against the eager flow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import flowspec
from flowspec.export import blockers, export_flow, run_artifact
from flowspec.export.capability import catalogue_markdown
from flowspec_cli.main import app

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
#: |exported - eager| relative to max(1, |eager|): log p of an image is in the thousands
TOL = 1e-4


def _features(path: Path) -> set[str]:
    """What exporting ``path`` exercises: each node type in each program that exports,
    each prior, the kind of context."""
    flow = flowspec.load(path, quick=True)
    g = flow.graph
    out = {"no context"} if g.context is None else {
        "class context" if g.context.num_classes is not None else "tensor context"}
    out |= {lat.prior for lat in g.latents}
    for program in ("log_prob", "sample"):
        if not blockers(flow, program):
            out |= {f"{n.type} in {program}" for n in g.nodes}
    return out


def _architectures() -> list[Path]:
    """Shipped specs that together use every node type, prior and kind of context of all
    shipped specs (a greedy cover, smallest data first): an exported graph is made of
    its nodes' graphs, and each export costs seconds."""
    feats = {p: _features(p) for p in SPECS}
    left, chosen = set().union(*feats.values()), []
    while left:
        best = max(SPECS, key=lambda p: (len(feats[p] & left), -p.stat().st_size))
        chosen.append(best)
        left -= feats[best]
    return chosen


@pytest.mark.slow
@pytest.mark.parametrize("spec", _architectures(), ids=lambda p: p.stem)
def test_shipped_spec_exports_to_onnx_within_tolerance(spec, tmp_path):
    torch.manual_seed(0)
    flow = flowspec.load(spec, quick=True)
    # No data directory: image specs are checked on the flow's own samples (CI has no MNIST).
    report = export_flow(flow, tmp_path, fmt="onnx", what="both", n_check=16,
                         data_dir=tmp_path / "no-data")
    assert report.programs, [str(b) for b in report.skipped]
    for prog in report.programs:
        assert prog.n == 16  # traced at batch 2: the batch dimension is dynamic
        assert prog.rel_diff <= TOL, (prog.program, prog.max_abs_diff, prog.scale)
    exported = {p.program for p in report.programs}
    assert exported | {b.program for b in report.skipped} == {"log_prob", "sample"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["programs"]) == exported


def test_blocked_program_names_the_node_and_why(tmp_path):
    flow = flowspec.load(ROOT / "specs" / "planar_u1.yaml", quick=True)
    (first, *_) = blockers(flow, "log_prob")
    assert first.kind == "planar" and "solved numerically" in first.reason
    assert blockers(flow, "sample") == []
    r = CliRunner().invoke(app, ["export", str(ROOT / "specs" / "planar_u1.yaml"), "--untrained",
                                 "--what", "log_prob", "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "planar" in r.output and "solved numerically" in r.output


def test_cli_export_of_a_trained_run_runs_in_onnxruntime(tiny_spec_path, tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    r = runner.invoke(app, ["train", str(tiny_spec_path), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(out / "tiny"), "-o", str(tmp_path / "onnx"), "-n", "64"])
    assert r.exit_code == 0, r.output
    assert "log_prob.onnx" in r.output and "sample.onnx" in r.output and "max |Δ|" in r.output
    flow = flowspec.load(out / "tiny")
    x = torch.randn(5, 2)  # another batch size than traced and checked
    got = run_artifact(tmp_path / "onnx" / "log_prob.onnx", (x,))
    with torch.no_grad():
        assert torch.allclose(got, flow.log_prob(x), atol=1e-4)
        noise = torch.randn(7, 2)
        got = run_artifact(tmp_path / "onnx" / "sample.onnx", (noise,))
        assert torch.allclose(got, flow.sample_from_noise(noise), atol=1e-4)


def test_torch_export_of_a_conditional_flow_takes_context(tmp_path):
    flow = flowspec.load(ROOT / "specs" / "conditional_simulator.yaml", quick=True)
    report = export_flow(flow, tmp_path, fmt="torch-export", n_check=16)
    assert {p.program for p in report.programs} == {"log_prob", "sample"}
    assert all(p.rel_diff <= TOL for p in report.programs)
    x, ctx = torch.randn(3, *flow.input_shape), torch.randn(3, *flow.context_shape)
    with torch.no_grad():
        want = flow.log_prob(x, ctx)
    assert torch.allclose(run_artifact(tmp_path / "log_prob.pt2", (x, ctx)), want, atol=1e-5)


def test_sample_from_noise_is_sample_with_the_noise_given():
    flow = flowspec.load(ROOT / "specs" / "realnvp_moons.yaml", quick=True)
    with torch.no_grad():
        torch.manual_seed(3)
        x = flow.sample(6)
        torch.manual_seed(3)
        assert torch.equal(flow.sample_from_noise(torch.randn(6, 2)), x)


def test_readme_export_table_is_current():
    fresh = subprocess.run([sys.executable, "-m", "flowspec.export"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- export-table:start -->")[1].split("<!-- export-table:end -->")[0]
    assert section.strip() == fresh, "stale: run `python -m flowspec.export`"
    assert "`planar` | no | yes" in catalogue_markdown()
