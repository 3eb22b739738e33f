"""Everyday CLI use: trained vs untrained flows, which checkpoint, outputs in the run dir,
`runs`, resume with overrides, sweeps, resolved specs, --version, check progress, cache."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from flowspec_cli.main import app

runner = CliRunner()
FAST = ["--set", "train.sample_every=0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def runs_root(tiny_spec_path, tmp_path):
    out = tmp_path / "runs"
    r = invoke("train", tiny_spec_path, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    return out


def _only_run(root):
    (run,) = (root / "tiny").iterdir()
    return run


def test_spec_instead_of_checkpoint_is_refused(tiny_spec_path, tmp_path):
    for cmd in (["eval"], ["sample", "-o", tmp_path / "s.png"], ["trace"]):
        r = invoke(cmd[0], tiny_spec_path, *cmd[1:])
        assert r.exit_code == 2, r.output
        assert "untrained" in r.output and "--untrained" in r.output
    assert not (tmp_path / "s.png").exists()
    r = invoke("eval", tiny_spec_path, "--untrained", "--json")
    assert r.exit_code == 0 and "UNTRAINED" in r.stderr
    assert json.loads(r.stdout)["checkpoint"] == {"untrained": True}


def test_commands_say_which_checkpoint(runs_root):
    run = _only_run(runs_root)
    r = invoke("eval", runs_root / "tiny")
    assert r.exit_code == 0, r.output
    assert f"checkpoint: {run / 'best.safetensors'} (best, step " in r.stderr
    assert "its only run" in r.stderr
    r = invoke("eval", runs_root / "tiny", "--json")
    out = json.loads(r.output)  # --json: nothing but the JSON, which names the checkpoint
    assert out["checkpoint"]["which"] == "best" and out["split"] == "test"
    assert "its only run" in out["checkpoint"]["notes"][0]
    r = invoke("eval", run, "--which", "last", "--json")
    assert json.loads(r.output)["checkpoint"] == {
        "path": str(run / "last.safetensors"), "which": "last", "step": 12, "notes": []}
    r = invoke("eval", run, "--which", "last")
    assert "(last, step 12)" in r.stderr
    r = invoke("eval", run, "--split", "val", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 51  # 10% of 512


def test_outputs_go_to_the_run_dir_and_never_overwrite(runs_root, tmp_path):
    run = _only_run(runs_root)
    first = invoke("sample", run, "--temp", "0.7", "-n", "50")
    second = invoke("sample", run, "--temp", "0.7", "-n", "50")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = run / "samples" / "sample-T0.7-seed0.png", run / "samples" / "sample-T0.7-seed0-2.png"
    assert a.is_file() and b.is_file()
    assert f"wrote {a}" in first.stdout and f"wrote {b}" in second.stdout
    r = invoke("trace", run, "-n", "100")
    assert r.exit_code == 0 and (run / "trace" / "trace-seed0.png").is_file()
    explicit = tmp_path / "mine.png"
    invoke("sample", run, "-n", "20", "-o", explicit)
    r = invoke("sample", run, "-n", "20", "-o", explicit)
    assert "replaced the existing file" in r.stdout
    assert not list(tmp_path.glob("samples.png"))  # nothing lands in the working directory


def test_runs_lists_status_and_best(runs_root, tiny_spec_path):
    r = invoke("runs", "--out", runs_root)
    assert r.exit_code == 0, r.output
    assert "finished" in r.stdout and "12/12" in r.stdout and "nll_nats" in r.stdout
    r = invoke("runs", "tiny", "--out", runs_root, "--json")
    (row,) = json.loads(r.stdout)
    assert row["status"] == "finished" and row["best"]["split"] == "val"
    r = invoke("runs", "tiyn", "--out", runs_root)
    assert r.exit_code == 2 and "did you mean 'tiny'" in r.output


def test_resume_by_name_with_overrides(runs_root):
    run = _only_run(runs_root)
    r = invoke("train", "--resume", runs_root / "tiny", "--set", "train.steps=16",
               "--set", "train.optimizer.adam.lr=0.002", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "resuming at step 12" in r.stdout and "lr=0.002" in r.stdout
    assert "newest run" in r.stderr and "resumes.jsonl" in r.stdout  # said once accepted
    assert json.loads((run / "status.json").read_text())["step"] == 16
    r = invoke("train", "--resume", "tiny", "--out", runs_root, "--set", "train.steps=17",
               "--device", "cpu")  # a bare name is looked up under --out
    assert r.exit_code == 0 and "resuming at step 16" in r.stdout, r.output
    r = invoke("train", "--resume", run, "--set", "train.batch_size=8")
    assert r.exit_code == 2 and "train.batch_size=8: cannot be changed when resuming" in r.output
    r = invoke("train", runs_root, "--resume", run)
    assert r.exit_code == 2 and "SPEC" in r.output
    r = invoke("train", "--resume", run, "--seed", "3")
    assert r.exit_code == 2 and "--seed" in r.output


def test_resolved_spec(tiny_spec_path):
    r = invoke("show", tiny_spec_path, "--resolved", "--set", "train.steps=99")
    assert r.exit_code == 0 and "steps: 99" in r.stdout and "val_fraction: 0.1" in r.stdout
    p = invoke("train", tiny_spec_path, "--print-spec", "--set", "train.steps=99")
    assert p.exit_code == 0 and p.stdout == r.stdout


def test_version_completion_and_help_example():
    r = invoke("--version")
    assert r.exit_code == 0 and re.fullmatch(r"flowspec \d+\.\d+\.\d+\n", r.stdout)
    r = invoke("--help")
    assert "--install-completion" in r.stdout
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "train.optimizer.adam.lr=3e-4" in r.stdout and "train.lr=" not in r.stdout
    json_line = next(line for line in r.stdout.splitlines() if "--print-spec" in line)
    assert "<bool>" not in json_line  # flags show no value type: they take none
    r = invoke("eval", "x", "--json=true")
    assert r.exit_code == 2 and "does not take a value" in r.output


def test_help_example_override_is_valid(tiny_spec_path):
    from flowspec.spec import load_spec

    assert load_spec(tiny_spec_path, ["train.optimizer.adam.lr=3e-4", "train.steps=500"]
                     ).train["optimizer"] == {"adam": {"lr": 3e-4}}


def test_sweep_compares_runs(tiny_spec_path, tmp_path):
    out = tmp_path / "runs"
    r = invoke("train", tiny_spec_path, "--out", out, "--sweep", "train.steps=7,14", *FAST)
    assert r.exit_code == 0, r.output
    assert "sweep 1/2: train.steps=7" in r.stdout and "sweep 2/2: train.steps=14" in r.stdout
    table = r.stdout[r.stdout.index("sweep over train.steps"):]
    rows = [line for line in table.splitlines() if line.startswith("train.steps=")]
    assert len(rows) == 2 and all("finished" in row and str(out) in row for row in rows)
    assert "best val nll_nats" in table and "best step" in table
    assert len(list((out / "tiny").iterdir())) == 2
    r = invoke("train", tiny_spec_path, "--sweep", "train.steps", *FAST)
    assert r.exit_code == 2 and "PATH=V1,V2" in r.output


def test_early_stopping_from_the_cli(tiny_spec_path, tmp_path):
    r = invoke("train", tiny_spec_path, "--out", tmp_path, "--set", "data.val_fraction=0",
               "--set", "train.early_stopping.patience=2", *FAST)
    assert r.exit_code == 2 and "needs a validation split" in r.output


def test_check_reports_each_node_in_a_pipe(tiny_spec_path):
    r = invoke("check", tiny_spec_path)
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if line.startswith("checked ")]
    assert lines == ["checked 1/2 flow.0.0.affine_coupling (affine_coupling): ok",
                     "checked 2/2 flow.0.1.affine_coupling (affine_coupling): ok"]


def test_schema_and_nodes_are_cached_per_code_version(tmp_path, monkeypatch):
    from flowspec_cli import cache

    first = invoke("nodes", "affine_coupling")
    files = list((tmp_path / "cache" / "flowspec" / "cli").glob("*.out"))
    assert first.exit_code == 0 and len(files) == 1
    assert files[0].read_text() == first.stdout
    files[0].write_text("from the cache\n")  # proves the second run replays it
    assert invoke("nodes", "affine_coupling").stdout == "from the cache\n"
    monkeypatch.setattr(cache, "source_fingerprint", lambda: "edited code")
    assert invoke("nodes", "affine_coupling").stdout == first.stdout
    monkeypatch.setenv("FLOWSPEC_NO_CACHE", "1")
    assert invoke("schema").exit_code == 0
    assert len(list((tmp_path / "cache" / "flowspec" / "cli").glob("*.out"))) == 2
    bad = invoke("nodes", "no_such_node")  # errors are never cached
    assert bad.exit_code == 2


def test_fast_commands_do_not_import_torch(tmp_path):
    """--help, --version and runs must stay fast: they never import torch (a lazy import
    that becomes eager, e.g. in flowspec/__init__.py, fails here)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from flowspec_cli.main import app\n"
            "for args in (['--help'], ['--version'], ['runs', '--out', sys.argv[1]],\n"
            "             ['train', '--help']):\n"
            "    try:\n"
            "        app(args)\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), (args, e.code)\n"
            "    assert 'torch' not in sys.modules, args\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
