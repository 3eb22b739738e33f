"""Checkpoints and resume under hostile conditions: kill -9 mid-save, damaged, foreign or
non-finite files, and disks that refuse writes. Nothing is lost; nothing wrong passes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import flowspec
from flowspec.checkpoint import read_checkpoint, save_checkpoint
from flowspec.errors import CheckpointError, FlowspecError
from flowspec.spec import load_spec
from flowspec.train.loop import train
from flowspec.train.report import SilentReporter

KILLER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    import flowspec.checkpoint as C
    from flowspec.spec import load_spec
    from flowspec.train.loop import train
    from flowspec.train.report import SilentReporter

    spec_path, out, kill_step, where = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    real_save = C.save_file

    def save_file(tensors, path, metadata):
        is_state = metadata["format"].endswith("-state")
        if is_state and json.loads(metadata["info"])["step"] == kill_step:
            if where == "mid-state":  # a torn temp file, as a kill during the write leaves
                with open(path, "wb") as fh:
                    fh.write(b"\\0" * 4096)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(tensors, path, metadata)

    C.save_file = save_file
    train(load_spec(spec_path), out_root=out, reporter=SilentReporter(), device="cpu")
""")


def _weights(path):
    return flowspec.load(path, ema=False).state_dict()


def _rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("examples_per_s", None)
    return rows


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from conftest import TINY_SPEC

    root = tmp_path_factory.mktemp("full")
    (root / "tiny.yaml").write_text(TINY_SPEC)
    result = train(load_spec(root / "tiny.yaml"), out_root=root / "runs",
                   reporter=SilentReporter(), device="cpu")
    return result.run_dir


@pytest.mark.parametrize("where", ["mid-state", "before-state"])
def test_kill_9_during_save_then_resume_is_bit_exact(where, tiny_spec_path, tmp_path, full_run):
    """SIGKILL while the step-8 checkpoint is written ('before-state': weights and best
    already at step 8, state still at 4 -- the mixed state the issue found), then resume."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tiny_spec_path),
                           str(tmp_path / "runs"), "8", where],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    temps = [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert temps if where == "mid-state" else True
    if where == "before-state":  # the state file lags the weights: exactly the case
        assert read_checkpoint(run / "last.safetensors")["info"]["step"] == 8

    resumed = train(None, resume=run, reporter=SilentReporter(), device="cpu")
    assert resumed.step == 12
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")], "stale temps left"
    for name in ("last.safetensors", "best.safetensors"):
        a, b = _weights(full_run / name), _weights(run / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    ema_a, ema_b = flowspec.load(full_run).state_dict(), flowspec.load(run).state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    rows = _rows(run)
    assert len({(r["split"], r["step"]) for r in rows}) == len(rows), "duplicate metric rows"
    assert rows == _rows(full_run)


def test_resume_drops_torn_and_future_metric_rows(full_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    from flowspec.train.resume import truncate_metrics

    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"split": "train", "step": 99, "loss"')  # torn by a kill
    dropped = truncate_metrics(run / "metrics.jsonl", 8)
    steps = [r["step"] for r in _rows(run)]
    assert max(steps) == 8 and dropped >= 2


def _rewrite(path, mutate_tensors=None, mutate_meta=None, keep_digest=False):
    """Rewrite a checkpoint with edited tensors/metadata (the digest recomputed unless
    ``keep_digest``, i.e. a well-formed file whose *content* is wrong)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_meta:
        mutate_meta(meta)
    if keep_digest:
        save_file(tensors, str(path), meta)
    else:
        save_checkpoint(path, tensors, meta["spec"], info=json.loads(meta["info"]))


@pytest.fixture
def ckpt(full_run, tmp_path):
    import shutil

    path = tmp_path / "model.safetensors"
    shutil.copy(full_run / "last.safetensors", path)
    return path


def test_wrong_shape_tensor_is_a_checkpoint_error(ckpt):
    key = next(iter(flowspec.load(ckpt).state_dict()))

    def widen(t):
        for k in (key, "ema::" + key):
            t[k] = torch.zeros(*t[k].shape, 2)

    _rewrite(ckpt, widen)
    with pytest.raises(CheckpointError, match="wrong shape") as info:
        flowspec.load(ckpt)
    assert key in str(info.value)


def test_non_json_info_is_a_checkpoint_error(ckpt):
    _rewrite(ckpt, mutate_meta=lambda m: m.update(info="{step: 3"), keep_digest=True)
    with pytest.raises(CheckpointError, match="'info' metadata is not valid JSON"):
        flowspec.load(ckpt)


def test_flipped_bit_is_detected_by_the_digest(ckpt):
    data = bytearray(ckpt.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 digest"):
        flowspec.load(ckpt)


def test_spec_metadata_is_text_never_a_path(ckpt, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("name: leaked\nmodel: {input: [2], flow: [affine_coupling]}\n")
    _rewrite(ckpt, mutate_meta=lambda m: m.update(spec=str(secret)), keep_digest=True)
    with pytest.raises(CheckpointError, match="stored in this file is not a valid spec") as info:
        flowspec.load(ckpt)
    assert "leaked" not in str(info.value)


def test_nan_weights_are_refused_naming_the_tensor(ckpt):
    key = [k for k, v in flowspec.load(ckpt, ema=False).state_dict().items()
           if v.is_floating_point()][0]
    _rewrite(ckpt, lambda t: t["ema::" + key].view(-1).__setitem__(0, float("nan")))
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        flowspec.load(ckpt)
    assert key in str(info.value)


def test_state_file_of_another_run_is_refused(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path, ["train.steps=4"])
    a = train(spec, out_root=tmp_path / "a", reporter=SilentReporter()).run_dir
    b = train(spec, out_root=tmp_path / "b", reporter=SilentReporter()).run_dir
    (b / "last.state.safetensors").write_bytes((a / "last.state.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train(None, resume=b, reporter=SilentReporter())


def test_evaluate_never_reports_a_non_finite_nll(ckpt):
    from flowspec.data import open_dataset
    from flowspec.objectives.nll import evaluate_nll

    flow = flowspec.load(ckpt)
    source, prep = open_dataset(flow.spec.data, None)
    split = source.load("test")
    split.x = split.x.clone()
    split.x[3] = float("inf")
    with pytest.raises(FlowspecError, match=r"non-finite log-density to 1 of \d+ examples"):
        evaluate_nll(flow, split, prep)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_training_is_a_clear_error(tiny_spec_path, tmp_path, monkeypatch):
    monkeypatch.setattr("flowspec.checkpoint.save_file", _enospc)
    with pytest.raises(FlowspecError, match="disk is full") as info:
        train(load_spec(tiny_spec_path), out_root=tmp_path, reporter=SilentReporter())
    assert "last.safetensors" in str(info.value) or "best.safetensors" in str(info.value)


def test_out_on_a_file_or_read_only_filesystem(tiny_spec_path, tmp_path, monkeypatch):
    a_file = tmp_path / "notadir"
    a_file.write_text("x")
    spec = load_spec(tiny_spec_path)
    with pytest.raises(FlowspecError, match="is a file, not a directory"):
        train(spec, out_root=a_file, reporter=SilentReporter())
    with pytest.raises(FlowspecError, match="not a directory"):
        train(spec, out_root=a_file / "sub", reporter=SilentReporter())

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    with pytest.raises(FlowspecError, match="read-only") as info:
        train(spec, out_root=tmp_path / "ro", reporter=SilentReporter())
    assert str(tmp_path / "ro") in str(info.value)


def test_cli_reports_bad_out_and_damaged_checkpoint_with_exit_2(tiny_spec_path, ckpt,
                                                                   tmp_path):
    from typer.testing import CliRunner

    from flowspec_cli.main import app

    a_file = tmp_path / "file"
    a_file.write_text("x")
    r = CliRunner().invoke(app, ["train", str(tiny_spec_path), "--out", str(a_file)])
    assert r.exit_code == 2 and "not a directory" in r.output and "Traceback" not in r.output
    data = bytearray(ckpt.read_bytes())
    data[-3] ^= 0x01
    ckpt.write_bytes(bytes(data))
    r = CliRunner().invoke(app, ["eval", str(ckpt)])
    assert r.exit_code == 2 and "digest" in r.output, r.output
