"""`flowspec.fit`: arrays, tensors and files in; a trained flow (and a run directory) out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import write_table
from typer.testing import CliRunner

import flowspec
from flowspec.errors import DataError
from flowspec_cli.main import app

ROOT = Path(__file__).parent.parent
SPEC = """\
name: fit_tiny
model:
  input: [2]
  flow:
    - standardize
    - repeat: 2
      as: i
      body:
        - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [8]}}}
train: {batch_size: 32, steps: 4, log_every: 2, sample_every: 0, ema: 0.9}
"""
COND = SPEC.replace("input: [2]", "input: [2]\n  context: {shape: [3]}")


def _data(n=200, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.array([5.0, 0.2][:d] + [1.0] * (d - 2)) + 40.0


def test_fit_array_returns_trained_flow_and_a_run_eval_can_read(tmp_path, capsys):
    x = _data()
    flow = flowspec.fit(SPEC, x, out=tmp_path / "runs")
    assert isinstance(flow, flowspec.Flow) and not flow.training
    printed = capsys.readouterr().out
    assert "fitted data statistics of flow.0.standardize" in printed and "step 4/4" in printed
    run = flow.run_dir
    assert (run / "last.safetensors").is_file() and run.parent.name == "fit_tiny"
    (data_file,) = (tmp_path / "runs" / "fit_tiny" / "data").glob("*.safetensors")
    info = json.loads((run / "run.json").read_text())["data"]
    assert info["file"]["files"]["path"]["path"] == str(data_file.resolve())
    assert info["n_train"] + info["n_val"] + info["n_test"] == 200
    # the returned flow is the checkpoint flowspec eval uses (best on val, EMA weights)
    assert flow.checkpoint == ("best" if flow.best is not None else "last")
    loaded = flowspec.load(run, which=flow.checkpoint)
    xt = torch.as_tensor(x[:5], dtype=torch.float32)
    assert torch.allclose(flow.log_prob(xt), loaded.log_prob(xt), atol=1e-5)
    # standardize was fitted on the training rows, so log p is in the data's units
    node = flow.nodes["flow/0/standardize"]
    assert bool(node.fitted) and abs(float(node.mean.flatten()[0]) - 40.0) < 2.0
    r = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n"] == 40


def test_fit_tensor_with_context_and_test_data_silent(tmp_path, capsys):
    x = torch.as_tensor(_data(), dtype=torch.float64)
    c = torch.randn(200, 3)
    flow = flowspec.fit(COND, x, context=c, test_data=x[:30], test_context=c[:30],
                        out=tmp_path, verbose=False, overrides={"train.steps": 2})
    assert capsys.readouterr().out == ""
    info = json.loads((flow.run_dir / "run.json").read_text())["data"]
    assert info["n_test"] == 30 and info["n_train"] + info["n_val"] == 200
    s = flow.sample(5, context=[0.0, 1.0, 2.0])
    assert s.shape == (5, 2) and torch.isfinite(s).all()


def test_fit_path_with_context_columns_and_temporary_out(tmp_path):
    path = write_table(tmp_path / "d.csv", _data().astype(np.float32), np.random.default_rng(1)
                       .normal(size=(200, 3)).astype(np.float32), columns=["a", "b"],
                       context_names=["p", "q", "r"])
    flow = flowspec.fit(COND, str(path), context=["p", "q", "r"], verbose=False,
                        overrides=["train.steps=2"])
    assert flow.run_dir.is_dir() and "flowspec-fit-" in str(flow.run_dir)
    pinned = flowspec.load(flow.run_dir).spec.data["dataset"]["file"]
    assert pinned["path"] == str(path.resolve()) and pinned["context"] == ["p", "q", "r"]
    assert pinned["columns"] == ["a", "b"]


def test_fit_errors_say_how_to_fix(tmp_path):
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        flowspec.fit(SPEC, np.arange(10.0), out=tmp_path)
    with pytest.raises(DataError, match="dtype <U1"):
        flowspec.fit(SPEC, np.array([["a", "b"]]), out=tmp_path)
    with pytest.raises(DataError, match=r"shape \[3\].*model.input is \[2\]"):
        flowspec.fit(SPEC, _data(d=3), out=tmp_path)
    with pytest.raises(DataError, match="not conditional"):
        flowspec.fit(SPEC, _data(), context=np.zeros((200, 3)), out=tmp_path)
    with pytest.raises(DataError, match="199 rows"):
        flowspec.fit(COND, _data(), context=np.zeros((199, 3)), out=tmp_path)
    with pytest.raises(DataError, match="gives none"):
        flowspec.fit(COND, _data(), out=tmp_path, verbose=False)
    bad = _data()
    bad[7, 1] = np.nan
    with pytest.raises(DataError, match=r"\[7, 1\]"):
        flowspec.fit(SPEC, bad, out=tmp_path)


def test_readme_fit_snippet_runs(tmp_path, monkeypatch):
    """The README's flowspec.fit example, with its step count cut to a few."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- fit-example -->")[1].split("```python\n")[1].split("```")[0]
    code = re.sub(r'"train.steps": \d+', '"train.steps": 3', block)
    assert code != block, "the snippet sets train.steps"
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    flow = namespace["flow"]
    assert isinstance(flow, flowspec.Flow) and bool(flow.nodes["flow/0/standardize"].fitted)


def test_fit_returns_the_best_checkpoint_not_an_overfit_last_step(tmp_path):
    """The flow fit() hands back is the one `flowspec eval` reports on: when the last
    step is not the best on validation, the best weights come back, and say so."""
    x = _data(n=400)
    flow = flowspec.fit(SPEC, x, out=tmp_path / "runs", verbose=False,
                        overrides={"train.steps": 30, "train.eval_every": 3,
                                   "train.optimizer": {"adam": {"lr": 0.3}}})
    best = json.loads((flow.run_dir / "status.json").read_text())["best"]
    assert flow.checkpoint == "best" and flow.best["step"] == best["step"]
    xt = torch.as_tensor(x[:50], dtype=torch.float32)
    want = flowspec.load(flow.run_dir, which="best").log_prob(xt)
    assert torch.allclose(flow.log_prob(xt), want, atol=1e-5)
    if best["step"] != 30:  # the last weights differ from the best ones
        last = flowspec.load(flow.run_dir, which="last").log_prob(xt)
        assert not torch.allclose(last, want, atol=1e-5)
