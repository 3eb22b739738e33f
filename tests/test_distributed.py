"""Data-parallel training: N gloo processes on CPU equal one process with the same global
batch; a stop or a divergence on one rank stops all; checkpoints resume with another N."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import flowspec
from flowspec.errors import FlowspecError
from flowspec.spec import load_spec
from flowspec.train import distributed
from flowspec.train.loop import train
from flowspec.train.report import SilentReporter

# Continuous data and MLP couplings: no random numbers inside a step, so N processes
# must reproduce one process to float rounding. 20 steps = one epoch, evaluated once.
SPEC = """\
name: ddp
data:
  dataset: {moons: {n_train: 1600, n_test: 256}}
  val_fraction: 0.2
model:
  input: [2]
  flow:
    - repeat: 2
      as: i
      body:
        - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [16]}}}
train:
  batch_size: 64
  steps: 20
  log_every: 5
  ema: 0.9
  sample_every: 0
  optimizer: {adam: {lr: 0.01}}
"""


def _spec(*sets: str):
    return load_spec(SPEC, list(sets))


def _weights(run_dir, ema=False):
    return flowspec.load(run_dir, ema=ema).state_dict()


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), (k, (a[k] - b[k]).abs().max())


def _rows(run_dir, split):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return train(_spec(), out_root=out, device="cpu", reporter=SilentReporter())


def stop_rank1_at_step_7(step: int) -> None:
    """A Ctrl-C that only rank 1 sees (module level, so spawned workers can unpickle it)."""
    if step == 7 and os.environ.get("RANK") == "1":
        signal.raise_signal(signal.SIGINT)


def test_two_processes_equal_one_process(one_process, tmp_path):
    two = train(_spec(), out_root=tmp_path, device="cpu", nproc=2, reporter=SilentReporter())
    assert two.step == one_process.step == 20
    # rank 0 alone wrote the run directory, and recorded the process count
    assert json.loads((two.run_dir / "run.json").read_text())["processes"] == 2
    assert len(list(tmp_path.glob("ddp/*"))) == 1
    _assert_close(_weights(one_process.run_dir), _weights(two.run_dir))
    _assert_close(_weights(one_process.run_dir, ema=True), _weights(two.run_dir, ema=True))
    # logged training rows are rank means of the same global batches
    for r1, r2 in zip(_rows(one_process.run_dir, "train"), _rows(two.run_dir, "train"),
                      strict=True):
        assert r1["step"] == r2["step"]
        assert r1["nll_nats"] == pytest.approx(r2["nll_nats"], rel=1e-4)
    # the sharded evaluation reduces to the 1-process mean over the same examples
    (v1,), (v2,) = _rows(one_process.run_dir, "val"), _rows(two.run_dir, "val")
    assert v1["n"] == v2["n"] == 320
    assert v1["nll_nats"] == pytest.approx(v2["nll_nats"], rel=1e-5)
    assert two.flow is not None and not two.flow.training


def test_stop_on_one_rank_stops_all_and_resumes_with_one_process(one_process, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(_spec(), out_root=tmp_path, device="cpu", nproc=2, reporter=SilentReporter(),
              on_step=stop_rank1_at_step_7)
    (run,) = (tmp_path / "ddp").iterdir()
    # ranks agree on a pending stop every STOP_CHECK_EVERY (10) steps
    assert flowspec.load(run).checkpoint_info["step"] == 10
    resumed = train(None, resume=run, device="cpu", reporter=SilentReporter())
    assert resumed.step == 20
    _assert_close(_weights(one_process.run_dir), _weights(run))


def test_divergence_on_all_ranks_is_one_clear_error(tmp_path):
    spec = _spec("train.optimizer.adam.lr=1e30", "train.max_bad_steps=2")
    with pytest.raises(FlowspecError, match="diverged"):
        train(spec, out_root=tmp_path, device="cpu", nproc=2, reporter=SilentReporter())


def test_global_batch_must_divide_among_processes():
    with pytest.raises(FlowspecError, match="must divide evenly among 3"):
        distributed.local_batch(64, 3)
    assert distributed.local_batch(64, 4) == 16


def test_ranks_take_disjoint_slices_of_the_same_global_batch():
    from flowspec.api import build_flow
    from flowspec.objectives.likelihood import MaximumLikelihood

    spec = _spec()
    flow = build_flow(spec)
    whole = MaximumLikelihood(spec, flow, {}, device=torch.device("cpu"))
    parts = [MaximumLikelihood(spec, flow, {}, device=torch.device("cpu"), shard=(r, 4))
             for r in range(4)]
    for step in (0, 3, 19, 20, 45):
        joined = torch.cat([p._indices(step, seed=5) for p in parts])
        assert torch.equal(joined, whole._indices(step, seed=5))
        assert len(parts[0]._indices(step, seed=5)) == 16


def test_sharded_evaluation_sums_to_the_whole(tmp_path):
    """Dequantization noise is seeded per batch, so shards see the 1-process noise."""
    from fakedata import write_mnist

    from flowspec.api import build_flow
    from flowspec.data import open_dataset
    from flowspec.objectives.nll import evaluate_nll

    write_mnist(tmp_path / "mnist", n_train=4, n_test=23)
    spec = load_spec("""
data: {dataset: mnist, preprocess: [{dequantize: uniform}]}
model:
  input: [1, 28, 28]
  flow: [flatten, {affine_coupling: {net: {mlp: {hidden: [8], zero_init: false}}}}]
""")
    flow = build_flow(spec)
    source, prep = open_dataset(spec.data, tmp_path)
    test = source.load("test")
    kw = {"batch_size": 5, "max_batches": 4}
    whole = evaluate_nll(flow, test, prep, **kw)
    shards = [evaluate_nll(flow, test, prep, shard=(r, 3), **kw) for r in range(3)]
    assert whole["n"] == 20 == sum(s["n"] for s in shards)
    total = sum(s["nll_nats"] * s["n"] for s in shards)
    assert total / whole["n"] == pytest.approx(whole["nll_nats"], rel=1e-12)


def test_torchrun_variables_are_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FlowspecError, match="RANK"):
        distributed.setup("cpu")
    with pytest.raises(FlowspecError, match="torchrun"):
        train(_spec(), nproc=2)


def test_single_process_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group, device = distributed.setup("cpu")
    assert group == distributed.SINGLE and device is None and group.is_main
    assert distributed.any_true(group, torch.tensor(True), torch.device("cpu"))
