"""The whole CLI on a tiny spec, as a user runs it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flowspec_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture
def trained(tiny_spec_path, tmp_path):
    out = tmp_path / "runs"
    r = invoke("train", tiny_spec_path, "--out", out, "--set", "train.steps=16", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (run,) = (out / "tiny").iterdir()
    return run


def test_train_eval_sample_trace_resume(trained, tmp_path):
    r = invoke("eval", trained, "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert metrics["n"] == 256 and "nll_nats" in metrics and "nll_minus_entropy" in metrics

    png = tmp_path / "s.png"
    r = invoke("sample", trained, "-n", "200", "-o", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    r = invoke("sample", trained, "-n", "10", "--npy", "-o", tmp_path / "s.npy")
    assert r.exit_code == 0, r.output
    import numpy as np

    assert np.load(tmp_path / "s.npy").shape == (10, 2)

    r = invoke("trace", trained, "-o", tmp_path / "t.png", "-n", "300")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.png").stat().st_size > 1000

    r = invoke("train", "--resume", trained, "--device", "cpu")
    assert r.exit_code == 0, r.output  # already finished: resumes and stops at once


def test_validate_reports_location_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  input: [2]\n  flow:\n    - afine_coupling: {mask: half}\n")
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 2
    assert f"{bad}:4:" in r.output and "did you mean 'affine_coupling'" in r.output
    assert "Traceback" not in r.output


def test_missing_checkpoint_is_exit_2(tmp_path):
    r = runner.invoke(app, ["eval", str(tmp_path / "nope.safetensors")])
    assert r.exit_code == 2 and "no such" in r.output


def test_show_check_nodes_schema(tiny_spec_path):
    r = invoke("show", tiny_spec_path)
    assert r.exit_code == 0 and "affine_coupling" in r.output and "parameters" in r.output
    r = invoke("check", tiny_spec_path)
    assert r.exit_code == 0, r.output
    assert "all 2 nodes pass" in r.output
    r = invoke("nodes")
    assert r.exit_code == 0 and "affine_coupling" in r.output
    r = invoke("schema")
    assert r.exit_code == 0 and json.loads(r.stdout)["$schema"].startswith("http://json-schema")


@pytest.fixture(scope="module")
def glow_run(tmp_path_factory):
    from pathlib import Path

    from fakedata import write_image_folder

    root = tmp_path_factory.mktemp("glow")
    data = root / "data"
    write_image_folder(data / "celeba" / "img_align_celeba", n=24, size=(160, 160))
    spec = Path(__file__).parent.parent / "specs" / "glow_celeba.yaml"
    r = invoke("train", spec, "--quick", "--set", "train.steps=2", "--set", "train.batch_size=8",
               "--data-dir", data, "--out", root / "runs", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (run,) = (root / "runs" / "glow_celeba").iterdir()
    return run, data


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_temperature_grid_interpolate_manipulate(glow_run, tmp_path):
    run, data = glow_run
    out = tmp_path / "temps.png"
    r = invoke("sample", run, "--temps", "0,0.5,1", "-n", "4", "-o", out, "--data-dir", data)
    assert r.exit_code == 0, r.output
    w, h = _png_size(out)
    assert h > w / 4 * 2.5  # three rows of four

    r = invoke("interpolate", run, "--pairs", "2", "--steps", "4", "-o", tmp_path / "i.png",
               "--data-dir", data)
    assert r.exit_code == 0, r.output
    r = invoke("manipulate", run, "--attr", "Smiling", "--alphas", "-1,0,1", "-o",
               tmp_path / "m.png", "--data-dir", data)
    assert r.exit_code == 0, r.output

    image = next((data / "celeba" / "img_align_celeba").glob("*.png"))
    r = invoke("manipulate", run, "--attr", "Male", "--image", image, "-o", tmp_path / "one.png",
               "--data-dir", data)
    assert r.exit_code == 0, r.output

    r = runner.invoke(app, ["manipulate", str(run), "--attr", "Smilng", "--data-dir", str(data)])
    assert r.exit_code == 2 and "did you mean 'Smiling'" in r.output


def test_image_probes_on_a_six_image_test_split(glow_run, tmp_path):
    """interpolate's defaults (4 pairs) on 6 test images: 3 pairs, said so; bad counts and
    alphas are refused (exit 2, one message)."""
    run, data = glow_run
    r = invoke("interpolate", run, "--data-dir", data)
    assert r.exit_code == 0, r.output
    assert "the test split has 6 images: 3 pair(s) instead of 4" in r.stderr
    out = run / "interpolations" / "interpolate-pairs3-steps8-seed0.png"
    assert out.is_file() and f"wrote {out}" in r.stdout
    w, h = _png_size(out)
    assert h > w / 8 * 2.5  # three rows of eight
    for args, expect in ((["--pairs", "0"], "--pairs"), (["--steps", "-3"], "--steps"),
                         (["-o", tmp_path / "i.qqq"], "unknown file type")):
        r = runner.invoke(app, ["interpolate", str(run), "--data-dir", str(data)]
                          + [str(a) for a in args])
        assert r.exit_code == 2 and expect in r.output, r.output
    r = runner.invoke(app, ["manipulate", str(run), "--attr", "Smiling", "--alphas", "",
                            "--data-dir", str(data)])
    assert r.exit_code == 2 and "at least one number" in r.output
    r = invoke("manipulate", run, "--attr", "Smiling", "--alphas", "-1,1", "--data-dir", data)
    assert r.exit_code == 0 and (run / "manipulations" / "manipulate-Smiling-test.png").is_file()
