"""Bad command-line arguments: each is one clear message and exit 2 -- never a traceback,
never a silent success (issue 10's probes; image-only probes are in test_cli.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flowspec_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY_SPEC

    root = tmp_path_factory.mktemp("probes")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    r = runner.invoke(app, ["train", str(spec), "--out", str(root / "runs"), "--set",
                            "train.sample_every=0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (run,) = (root / "runs" / "tiny").iterdir()
    return run


def refused(*args, expect: str) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, (args, r.exit_code, r.output)
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception,
                                                                             SystemExit)
    assert expect in r.output, (args, r.output)
    return r.output


@pytest.mark.parametrize("size", ["0", "-5"])
def test_eval_batch_size(run, size):
    refused("eval", run, "--batch-size", size, expect="--batch-size")


@pytest.mark.parametrize("n", ["0", "-5"])
def test_sample_count(run, n):
    refused("sample", run, "-n", n, expect="'-n'")


def test_sample_temperatures(run):
    refused("sample", run, "--temp", "-1", expect="--temp")
    refused("sample", run, "--temps", "0.5,-1", expect="--temps: every value must be >= 0")
    refused("sample", run, "--temps", "", expect="at least one number")
    refused("sample", run, "--temp", "1", "--temps", "0,1", expect="not both")


def test_sample_output_paths(run, tmp_path):
    refused("sample", run, "-o", tmp_path / "x.qqq", expect="unknown file type '.qqq'")
    afile = tmp_path / "FILE"
    afile.write_text("")
    refused("sample", run, "-o", afile / "x.png", expect="is a file, not a directory")
    refused("sample", run, "-o", tmp_path, expect="unknown file type")
    refused("sample", run, "--npy", "-o", tmp_path / "x.png", expect="'.png'")
    assert not list(tmp_path.glob("x.*"))


def test_checkpoint_choice(run, tmp_path):
    refused("eval", run, "--which", "newest", expect="--which must be best or last")
    refused("eval", tmp_path / "nope", expect="no such file or directory")
    refused("eval", run, "--split", "tset", expect="--split must be test, val or train")
    refused("eval", run / "last.safetensors", "--untrained", expect="not a spec file")


def test_interpolate_counts(run):
    refused("interpolate", run, "--pairs", "0", expect="--pairs")
    refused("interpolate", run, "--steps", "-3", expect="--steps")
    refused("interpolate", run, expect="not images")  # a 2-D flow


def test_manipulate_alphas(run):
    refused("manipulate", run, "--attr", "Smiling", "--alphas", "", expect="at least one number")
    refused("manipulate", run, "--attr", "Smiling", "--alphas", "1,x", expect="comma-separated")


def test_nodes_names():
    refused("nodes", "no_such_node", expect="no node, net, prior, dataset, preprocessing "
            "step, energy or training option named 'no_such_node'")
    refused("nodes", "affine_couplin", expect="did you mean 'affine_coupling'")
    out = refused("nodes", "factor_out", expect="'factor_out' is a spec keyword, not a node")
    assert "latent" in out


def test_train_without_spec_or_resume():
    refused("train", expect="give a spec to train, or --resume")
