"""The `file` dataset: every format, contexts, splits, pinned provenance, every user error
with its message; `standardize`; `flowspec train --data`; samples written as data files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import write_table
from typer.testing import CliRunner

import flowspec
from flowspec.data import open_dataset
from flowspec.data.files import FileSource, read_table
from flowspec.errors import DataError, FlowspecError
from flowspec.spec import load_spec
from flowspec.train.loop import Trainer, train
from flowspec.train.report import SilentReporter
from flowspec_cli.main import app

runner = CliRunner()


def _source(path, data_dir=None, spec_dir=None, **params) -> FileSource:
    source, _ = open_dataset({"dataset": {"file": {"path": str(path), **params}}}, data_dir,
                             spec_dir=spec_dir)
    return source.source  # inside WithValidation


def _rows(n=50, d=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _message(err: FlowspecError) -> str:
    return "\n".join(p.format() for p in err.problems)


# -- formats ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".npy", ".npz", ".safetensors"])
def test_every_format_round_trips_and_splits(tmp_path, suffix):
    x = _rows(50, 3)
    path = tmp_path / f"d{suffix}"
    if suffix == ".tsv":
        np.savetxt(path, x, delimiter="\t", header="a\tb\tc", comments="", fmt="%.9g")
    else:
        write_table(path, x, columns=["a", "b", "c"])
    src = _source(path)
    train, test = src.load("train"), src.load("test")
    assert src.shape == (3,) and train.x.dtype == torch.float32
    assert len(train) + len(test) == 50 and len(test) == 10  # default test_fraction 0.2
    both = torch.cat([train.x, test.x])
    order = np.lexsort(x.T[::-1])
    got = both.numpy()[np.lexsort(both.numpy().T[::-1])]
    assert np.array_equal(got, x[order])  # exactly the file's values, each row once


def test_split_is_deterministic_and_seeded(tmp_path):
    path = write_table(tmp_path / "d.npy", _rows(100))
    a = _source(path, seed=3, test_fraction=0.3).load("test").x
    b = _source(path, seed=3, test_fraction=0.3).load("test").x
    c = _source(path, seed=4, test_fraction=0.3).load("test").x
    assert a.shape[0] == 30 and torch.equal(a, b) and not torch.equal(a, c)


def test_csv_columns_and_ignored_text_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,b,a,note\nr1,1,2,hello\nr2,3,4,\nr3,5,6,x\n\nr4,7,8,y\n")
    t = read_table(path, columns=["a", "b"])
    assert t.columns == ["a", "b"]
    assert t.x.tolist() == [[2, 1], [4, 3], [6, 5], [8, 7]]  # blank line skipped


def test_csv_slow_path_reads_what_numpy_cannot(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n   \n3, 4\n")  # a whitespace-only line: numpy fails, csv reads
    assert read_table(path).x.tolist() == [[1, 2], [3, 4]]


def test_npz_and_safetensors_named_arrays_and_context(tmp_path):
    x, theta = _rows(40, 2), _rows(40, 3, seed=1)
    for suffix in (".npz", ".safetensors"):
        path = write_table(tmp_path / f"s{suffix}", x, theta, context_names="theta",
                           array="obs")
        t = read_table(path, array="obs", context="theta")
        assert torch.equal(t.x, torch.from_numpy(x)) and torch.equal(t.context,
                                                                     torch.from_numpy(theta))
        src = _source(path, array="obs", context="theta")
        assert src.load("train").context.shape == (32, 3) and src.context_shape == (3,)


def test_csv_context_columns_and_context_file(tmp_path):
    x, c = _rows(30, 2), _rows(30, 1, seed=2)
    path = write_table(tmp_path / "d.csv", x, c, columns=["x1", "x2"], context_names=["temp"])
    t = read_table(path, context=["temp"])  # data: every other column
    assert t.columns == ["x1", "x2"] and t.context_columns == ["temp"]
    assert torch.allclose(t.context, torch.from_numpy(c))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "c.npy", c[:, 0])  # one number per row -> [N, 1]
    t = read_table(tmp_path / "x.npy", context_path=tmp_path / "c.npy")
    assert t.context.shape == (30, 1)


def test_explicit_test_path(tmp_path):
    train_file = write_table(tmp_path / "train.csv", _rows(40), columns=["a", "b"])
    test_file = write_table(tmp_path / "test.csv", _rows(7, seed=5), columns=["a", "b"])
    src = _source(train_file, test_path=str(test_file))
    assert len(src.load("train")) == 40 and len(src.load("test")) == 7


# -- errors, each with where and how to fix it -------------------------------------------------
def _err(fn) -> str:
    with pytest.raises(DataError) as info:
        fn()
    return _message(info.value)


def test_missing_file_and_unknown_extension(tmp_path):
    msg = _err(lambda: _source("nope.csv", data_dir=tmp_path).load("train"))
    assert "nope.csv" in msg and "no such file" in msg and str(tmp_path) in msg
    (tmp_path / "d.txt").write_text("a\n1\n")
    msg = _err(lambda: read_table(tmp_path / "d.txt"))
    assert "unknown file type '.txt'" in msg and ".csv" in msg


def test_missing_column_and_array_suggest_names(tmp_path):
    csv_path = write_table(tmp_path / "d.csv", _rows(5), columns=["height", "weight"])
    msg = _err(lambda: read_table(csv_path, columns=["hieght"]))
    assert f"{csv_path}:1:" in msg and "no column 'hieght'" in msg
    assert "did you mean 'height'" in msg
    npz = write_table(tmp_path / "d.npz", _rows(5), _rows(5), context_names="theta")
    msg = _err(lambda: read_table(npz, context="thetta"))
    assert "no array 'thetta'" in msg and "did you mean 'theta'" in msg


def test_non_numeric_value_names_line_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n5,abc\n")
    msg = _err(lambda: read_table(path))
    assert f"{path}:4:" in msg and "column 'b'" in msg and "'abc' is not a number" in msg
    path.write_text("a,b\n1,2\n\n3,\n")
    msg = _err(lambda: read_table(path))
    assert f"{path}:4:" in msg and "column 'b': empty value" in msg
    path.write_text("a,b\n1,2\n3\n")
    msg = _err(lambda: read_table(path))
    assert f"{path}:3:" in msg and "1 fields" in msg


def test_nan_and_inf_are_located(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,nan\n")
    msg = _err(lambda: read_table(path))
    assert f"{path}:3:" in msg and "column 'b'" in msg and "not finite" in msg
    path.write_text("a,b\n1,2\n-inf,2\n")
    assert f"{path}:3:" in _err(lambda: read_table(path))
    x = _rows(6)
    x[4, 1] = np.inf
    msg = _err(lambda: read_table(write_table(tmp_path / "d.npy", x)))
    assert "[4, 1]" in msg and "row 4" in msg and "inf" in msg
    big = np.array([[1.0], [1e300]])
    msg = _err(lambda: read_table(write_table(tmp_path / "b.npy", big)))
    assert "float32" in msg


def test_empty_files(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("")
    assert "empty file" in _err(lambda: read_table(path))
    path.write_text("a,b\n")
    assert "no data rows" in _err(lambda: read_table(path))
    path.write_text("1,2\n3,4\n")
    assert "holds numbers, not column names" in _err(lambda: read_table(path))
    np.save(tmp_path / "e.npy", np.zeros((0, 2)))
    assert "no rows" in _err(lambda: read_table(tmp_path / "e.npy"))


def test_shapes_dtypes_and_lengths(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(5.0))
    msg = _err(lambda: read_table(tmp_path / "one.npy"))
    assert "shape [5]" in msg and "reshape(-1, 1)" in msg
    np.savez(tmp_path / "s.npz", x=np.array([["a", "b"]]))
    assert "dtype <U1" in _err(lambda: read_table(tmp_path / "s.npz"))
    np.save(tmp_path / "b.npy", np.ones((3, 2), dtype=bool))
    assert "dtype bool" in _err(lambda: read_table(tmp_path / "b.npy"))
    path = write_table(tmp_path / "c.npz", _rows(10), _rows(9), context_names="theta")
    msg = _err(lambda: read_table(path, context="theta"))
    assert "9 rows but the data has 10" in msg
    np.savez(tmp_path / "m.npz", a=_rows(3), b=_rows(3))
    assert "which one is the data" in _err(lambda: read_table(tmp_path / "m.npz"))


def test_constant_column_and_conflicting_parameters(tmp_path):
    x = _rows(10)
    x[:, 1] = 5.0
    path = write_table(tmp_path / "d.csv", x, columns=["a", "b"])
    msg = _err(lambda: _source(path).load("train"))
    assert "column b has the same value in every row" in msg
    msg = _err(lambda: _source(path, test_path="t.csv", test_fraction=0.2))
    assert "test_fraction or test_path, not both" in msg


def test_shape_against_model_input(tmp_path):
    path = write_table(tmp_path / "d.csv", _rows(64, 3), columns=["a", "b", "c"])
    spec = load_spec(_tiny_spec(path, columns=None))
    with pytest.raises(DataError) as info:
        train(spec, out_root=tmp_path / "runs", reporter=SilentReporter())
    msg = _message(info.value)
    assert "shape [3]" in msg and "model.input is [2]" in msg and "a, b, c" in msg


def test_context_must_match_the_flow(tmp_path):
    path = write_table(tmp_path / "d.npz", _rows(64), _rows(64, 3), context_names="theta")
    unconditional = load_spec(_tiny_spec(path, columns=None, context="theta"))
    with pytest.raises(DataError, match="would be ignored"):
        train(unconditional, out_root=tmp_path / "r", reporter=SilentReporter())
    wrong = load_spec(_tiny_spec(path, columns=None, context="theta", model_context=[2]))
    with pytest.raises(DataError, match=r"shape \[3\] per example"):
        train(wrong, out_root=tmp_path / "r", reporter=SilentReporter())
    missing = load_spec(_tiny_spec(path, columns=None, model_context=[3]))
    with pytest.raises(DataError, match="gives none"):
        train(missing, out_root=tmp_path / "r", reporter=SilentReporter())


# -- runs: paths, provenance, standardize -------------------------------------------------------
def _tiny_spec(path, columns=("a", "b"), context=None, model_context=None, standardize=False,
               steps=3, **file_params) -> str:
    params = {"path": str(path), **file_params}
    if columns:
        params["columns"] = list(columns)
    if context:
        params["context"] = context
    ctx = f"\n  context: {{shape: {model_context}}}" if model_context else ""
    first = "    - standardize\n" if standardize else ""
    return f"""\
name: tiny_file
data:
  dataset: {{file: {json.dumps(params)}}}
model:
  input: [2]{ctx}
  flow:
{first}    - repeat: 2
      as: i
      body:
        - affine_coupling: {{mask: half, parity: "${{i}}", net: {{mlp: {{hidden: [8]}}}}}}
train: {{batch_size: 16, steps: {steps}, log_every: 1, sample_every: 0}}
"""


def test_relative_paths_data_dir_then_spec_dir_and_pinned(tmp_path):
    spec_dir, data_dir = tmp_path / "specs", tmp_path / "data"
    spec_dir.mkdir()
    write_table(spec_dir / "t.csv", _rows(80, seed=1), columns=["a", "b"])
    (spec_dir / "tiny.yaml").write_text(_tiny_spec("t.csv"))
    result = train(load_spec(spec_dir / "tiny.yaml"), out_root=tmp_path / "runs",
                   data_dir=data_dir, reporter=SilentReporter())
    stored = load_spec((result.run_dir / "spec.yaml").read_text())
    pinned = stored.data["dataset"]["file"]
    assert pinned["path"] == str((spec_dir / "t.csv").resolve())  # found next to the spec
    assert len(pinned["sha256"]) == 64 and pinned["columns"] == ["a", "b"]
    run = json.loads((result.run_dir / "run.json").read_text())["data"]
    assert run["n_train"] + run["n_val"] + run["n_test"] == 80
    assert run["n_test"] == 16 and run["split_seed"] == 0
    assert run["file"]["files"]["path"]["sha256"] == pinned["sha256"]
    assert run["file"]["test_split"] == {"fraction": 0.2, "seed": 0}

    # the data dir wins over the spec's directory, and stays relative in the stored spec
    write_table(data_dir / "t.csv", _rows(80, seed=2), columns=["a", "b"])
    result = train(load_spec(spec_dir / "tiny.yaml"), out_root=tmp_path / "runs",
                   data_dir=data_dir, reporter=SilentReporter())
    pinned = load_spec((result.run_dir / "spec.yaml").read_text()).data["dataset"]["file"]
    assert pinned["path"] == "t.csv"

    # a changed file is refused when the run is evaluated
    write_table(data_dir / "t.csv", _rows(80, seed=3), columns=["a", "b"])
    r = runner.invoke(app, ["eval", str(result.run_dir), "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "the file changed" in r.output


def test_standardize_fits_on_train_only_and_is_kept_on_resume(tmp_path, monkeypatch):
    x = _rows(200) * np.array([30.0, 0.1], dtype=np.float32) + np.array([500.0, -2.0],
                                                                        dtype=np.float32)
    test = _rows(50, seed=9) * 100 + 1000  # very different: would show if it leaked in
    path = write_table(tmp_path / "d.csv", x, columns=["a", "b"])
    test_path = write_table(tmp_path / "t.csv", test, columns=["a", "b"])
    spec = load_spec(_tiny_spec(path, standardize=True, test_path=str(test_path),
                                steps=2))
    trainer = Trainer(spec, out_root=tmp_path / "runs", reporter=SilentReporter())
    node = trainer.flow.nodes["flow/0/standardize"]
    train_x = trainer.objective.train_split.x.double()
    assert len(train_x) == 180  # val (10%) held out
    assert torch.allclose(node.mean.flatten().double(), train_x.mean(0), rtol=1e-6)
    assert torch.allclose(node.log_std.flatten().double().exp(), train_x.std(0, unbiased=False),
                          rtol=1e-5)
    assert not torch.allclose(node.mean.flatten().double(),
                              torch.from_numpy(x).double().mean(0), rtol=1e-6)
    trainer.run()
    saved = node.mean.clone()

    from flowspec.bijectors.standardize import Standardize

    def refit(self, batches):
        raise AssertionError("a resumed run must keep its statistics")

    monkeypatch.setattr(Standardize, "fit_data", refit)
    resumed = Trainer(spec, resume=trainer.run_dir, reporter=SilentReporter())
    assert torch.equal(resumed.flow.nodes["flow/0/standardize"].mean, saved)
    assert bool(resumed.flow.nodes["flow/0/standardize"].fitted)


def test_standardize_reports_nll_in_the_data_units(tmp_path):
    """log p of the flow with standardize on affinely mapped data = log p of the flow without
    it on the original data minus the affine map's log-det."""
    from flowspec.check import jitter_parameters
    from flowspec.datafit import fit_statistics, tensor_batches

    x = torch.from_numpy(_rows(500, seed=3)).double()
    x = (x - x.mean(0)) / x.std(0, unbiased=False)  # exactly mean 0, std 1
    scale, shift = torch.tensor([10.0, 0.5]).double(), torch.tensor([100.0, -3.0]).double()
    x_mapped = x * scale + shift
    body = ("    - affine_coupling: {mask: half, net: {mlp: {hidden: [8]}}}\n"
            "    - affine_coupling: {mask: half, parity: 1, net: {mlp: {hidden: [8]}}}\n")
    head = "model:\n  input: [2]\n  flow:\n"
    plain = flowspec.load(head + body).double()
    with_std = flowspec.load(head + "    - standardize\n" + body).double()
    jitter_parameters(plain, seed=1, amount=0.5)
    couplings = [m for _, m in with_std.node_items() if _ != "flow.0.standardize"]
    for (_, src), dst in zip(plain.node_items(), couplings):
        dst.load_state_dict(src.state_dict())
    assert fit_statistics(with_std, tensor_batches(x_mapped)) == ["flow.0.standardize"]
    nll_mapped = -with_std.log_prob(x_mapped)
    nll = -plain.log_prob(x)
    assert torch.allclose(nll_mapped - nll, torch.log(scale).sum().expand(500), atol=1e-9)


def test_unfitted_standardize_warns_in_eval():
    flow = flowspec.load("model:\n  input: [2]\n  flow: [standardize]\n")
    with pytest.warns(UserWarning, match="no fitted statistics"):
        flow.log_prob(torch.zeros(3, 2))


# -- the CLI --------------------------------------------------------------------------------------
def test_cli_train_data_keeps_file_parameters_and_samples_csv(tmp_path, tiny_spec_path):
    path = write_table(tmp_path / "mine.csv", _rows(300, 3, seed=4), columns=["u", "v", "w"])
    spec = tmp_path / "pick.yaml"
    spec.write_text(_tiny_spec(tmp_path / "other.csv", columns=("w", "u")))
    out = tmp_path / "runs"
    r = runner.invoke(app, ["train", str(spec), "--data", str(path), "--out", str(out),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (run,) = (out / "tiny_file").iterdir()
    pinned = load_spec((run / "spec.yaml").read_text()).data["dataset"]["file"]
    assert pinned["path"] == str(path.resolve()) and pinned["columns"] == ["w", "u"]
    r = runner.invoke(app, ["sample", str(run), "-n", "7", "-o", str(tmp_path / "s.csv")])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "w,u" and len(lines) == 8

    # a spec on a built-in dataset trains on the file instead
    r = runner.invoke(app, ["train", str(tiny_spec_path), "--data", str(path), "--out",
                            str(out), "--set", "data.dataset.file.columns=[u,v]",
                            "--set", "train.steps=2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(out / "tiny"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n"] == 60

    r = runner.invoke(app, ["train", str(tiny_spec_path), "--data", str(tmp_path / "x.csv"),
                            "--out", str(out)])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output


def test_cli_conditional_sampling_to_csv_npz(tmp_path):
    x, c = _rows(120, 2), _rows(120, 2, seed=7)
    path = write_table(tmp_path / "sim.npz", x, c, context_names="theta")
    spec = tmp_path / "cond.yaml"
    spec.write_text(_tiny_spec(path, columns=None, context="theta", model_context=[2]))
    out = tmp_path / "runs"
    r = runner.invoke(app, ["train", str(spec), "--out", str(out)])
    assert r.exit_code == 0, r.output
    run = out / "tiny_file"
    r = runner.invoke(app, ["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.csv"),
                            "--context", "0.5,-1"])
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "theta1,theta2,x1,x2" and len(rows) == 6
    assert all(r.split(",")[:2] == ["0.5", "-1"] for r in rows[1:])
    r = runner.invoke(app, ["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.npz"),
                            "--context", "0.5,-1"])
    z = np.load(tmp_path / "s.npz")
    assert z["x"].shape == (5, 2) and np.allclose(z["theta"], [0.5, -1])
    r = runner.invoke(app, ["sample", str(run), "-o", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "--context" in r.output
    r = runner.invoke(app, ["sample", str(run), "-o", str(tmp_path / "s.csv"), "--context", "1"])
    assert r.exit_code == 2 and "has 1 value(s)" in r.output
    r = runner.invoke(app, ["sample", str(run), "-o", str(tmp_path / "p.png"), "--context",
                            "0,0.5"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(app, ["eval", str(run), "--json"])
    assert r.exit_code == 0 and math.isfinite(json.loads(r.output)["nll_nats"])


def test_shipped_conditional_spec_reads_its_file_layout():
    root = Path(__file__).parent.parent
    spec = load_spec(root / "specs" / "conditional_simulator.yaml")
    params = spec.data["dataset"]["file"]
    assert params["array"] == "x" and params["context"] == "theta"
    assert spec.graph.context.tensor_shape == (2,)
    assert Path(flowspec.__file__).parent.parent == root
