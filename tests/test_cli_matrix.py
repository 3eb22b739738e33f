"""`flowspec train` fresh / --resume / --sweep × --print-spec / --compile / --nproc 2 /
--data / --quick on a tiny spec: every combination runs or refuses with a message, never
a traceback."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowspec_cli.main import app

runner = CliRunner()

SPEC = """\
name: tiny
data:
  dataset: {moons: {n_train: 256, n_test: 128}}
model:
  input: [2]
  flow:
    - affine_coupling: {mask: half, parity: 0, net: {mlp: {hidden: [8]}}}
    - affine_coupling: {mask: half, parity: 1, net: {mlp: {hidden: [8]}}}
train: {batch_size: 64, steps: 4, log_every: 2, sample_every: 0, eval_batches: 1}
quick: {train.steps: 2}
"""
MODES = ("fresh", "resume", "sweep")
OPTIONS = ("none", "print-spec", "compile", "nproc2", "data", "quick")
#: (mode, option) -> the message of a refusal; every other pair runs
REFUSED = {
    ("resume", "data"): "--data cannot be used with it",
    ("resume", "quick"): "--quick cannot be used with it",
    ("sweep", "print-spec"): "--print-spec prints one spec; drop --sweep",
    ("sweep", "nproc2"): "--sweep runs its trainings in one process; drop --nproc",
}
#: --nproc 2 spawns gloo workers (seconds each): only where it is the point
SLOW = {("fresh", "nproc2"), ("resume", "nproc2")}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A spec, a data file and one finished run to resume (copied per test)."""
    root = tmp_path_factory.mktemp("matrix")
    spec = root / "tiny.yaml"
    spec.write_text(SPEC)
    rng = np.random.default_rng(0)
    data = root / "points.csv"
    np.savetxt(data, rng.normal(size=(200, 2)), delimiter=",", header="a,b", comments="")
    r = runner.invoke(app, ["train", str(spec), "--out", str(root / "runs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (run,) = (root / "runs" / "tiny").iterdir()
    return {"spec": spec, "data": data, "run": run}


def _args(mode: str, option: str, base: dict, tmp_path) -> list[str]:
    out = tmp_path / "runs"
    if mode == "resume":
        run = tmp_path / "run"
        shutil.copytree(base["run"], run)
        args = ["train", "--resume", str(run), "--set", "train.steps=6"]
    else:
        args = ["train", str(base["spec"]), "--out", str(out)]
        if mode == "sweep":
            args += ["--sweep", "train.optimizer.adam.lr=0.001,0.002"]
    args += ["--device", "cpu"]
    args += {"none": [], "print-spec": ["--print-spec"], "compile": ["--compile"],
             "nproc2": ["--nproc", "2"], "data": ["--data", str(base["data"])],
             "quick": ["--quick"]}[option]
    return args


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", MODES)
def test_train_matrix(mode, option, base, tmp_path, monkeypatch):
    if (mode, option) in SLOW and not torch.distributed.is_available():
        pytest.skip("torch.distributed is unavailable")
    # train.compile's path (CompiledOrEager) without minutes of C++ compilation
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    r = runner.invoke(app, _args(mode, option, base, tmp_path))
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    refusal = REFUSED.get((mode, option))
    if refusal is not None:
        assert r.exit_code == 2 and refusal in r.output, r.output
        return
    assert r.exit_code == 0, r.output
    if option == "print-spec":
        assert r.output.startswith("flowspec: 1") and "name: tiny" in r.output
        if mode == "resume":  # the resume's overrides are in the spec it prints
            assert "steps: 6" in r.output
        if mode == "fresh":
            assert not (tmp_path / "runs").exists()
        return
    assert "done" in r.output or "sweep over" in r.output
    if mode == "sweep":
        assert r.output.count("finished") == 2, r.output
    if option == "data" and mode != "resume":
        # a run on a data file is named after it
        assert "points.csv" in next((tmp_path / "runs" / "points").iterdir()).joinpath(
            "spec.yaml").read_text()
    if option == "compile":  # --compile is --set train.compile=true, recorded with the run
        if mode == "resume":
            assert '"train.compile": [false, true]' in (tmp_path / "run" / "resumes.jsonl"
                                                        ).read_text()
        else:
            run = next((tmp_path / "runs" / "tiny").iterdir())
            assert "compile: true" in (run / "spec.yaml").read_text()
    if option == "quick" and mode == "fresh":
        assert "2/2" in r.output or "step 2" in r.output
