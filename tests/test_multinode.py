"""Several machines, played on this one: two torchrun "nodes" (one process each, c10d
rendezvous on localhost, gloo) end where one process ends; a run resumes with another
number of nodes; synchronized batch norm makes N processes train as one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flowspec
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import SilentReporter
from flowspec_cli.main import app

# Continuous data, MLP couplings, no randomness inside a step: processes must agree to
# float rounding (SGD: Adam's first step turns rounding noise of a zero gradient into
# +-lr). 1280 training rows / batch 64 = 20 steps = one epoch.
SPEC = """\
name: nodes
data:
  dataset: {moons: {n_train: 1600, n_test: 128}}
  val_fraction: 0.2
model:
  input: [2]
  flow:
    - repeat: 2
      as: i
      body:
        - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [8]}}}
        - BN
train:
  batch_size: 64
  steps: 20
  log_every: 10
  sample_every: 0
  eval_batches: 1
  optimizer: {sgd: {lr: 0.05}}
"""


def _spec_text(bn: str = "actnorm") -> str:
    return SPEC.replace("BN", bn)


def _close(run_a: Path, run_b: Path) -> float:
    """Largest difference of two runs' weights and buffers (running statistics too)."""
    a, b = flowspec.load(run_a).state_dict(), flowspec.load(run_b).state_dict()
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flowspec") is None, reason="the flowspec script is not installed")
def test_two_torchrun_nodes_equal_one_process_and_resume_on_one(tmp_path):
    spec = tmp_path / "nodes.yaml"
    spec.write_text(_spec_text())
    one = train(load_spec(spec), out=tmp_path / "one", device="cpu",
                reporter=SilentReporter())
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
         "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "nodes-test",
         "--rdzv-endpoint", f"127.0.0.1:{port}", shutil.which("flowspec"), "train", str(spec),
         "--out", str(tmp_path / "two"), "--device", "cpu", "--set", "train.steps=10"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)]
    outs = [p.communicate(timeout=240)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(outs)
    (run,) = (tmp_path / "two" / "nodes").iterdir()  # rank 0 alone wrote a run directory
    assert '"processes": 2' in (run / "run.json").read_text()
    # ... and resumes on one node to the end of the one-process run
    r = CliRunner().invoke(app, ["train", "--resume", str(run), "--set", "train.steps=20",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert _close(one.run_dir, run) <= 1e-5


@pytest.mark.slow
def test_synchronized_batch_norm_makes_two_processes_train_as_one(tmp_path):
    def run(bn: str, nproc: int, where: str):
        text = _spec_text(bn).replace("steps: 20", "steps: 6")
        return train(load_spec(text), out=tmp_path / where, device="cpu", nproc=nproc,
                     reporter=SilentReporter()).run_dir

    one = run("{batch_norm: {sync: true}}", 1, "one")
    synced = run("{batch_norm: {sync: true}}", 2, "synced")
    assert _close(one, synced) <= 1e-5
    local = run("batch_norm", 2, "local")  # each process normalises its own half-batch
    assert _close(one, local) > 1e-4
