"""The NaN watchdog: a non-finite loss names the node it came from, with its spec line,
and the hint to resume at a lower learning rate; a healthy run never pays for it."""

from __future__ import annotations

import pytest
import torch

import flowspec
from flowspec.errors import FlowspecError
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import PlainReporter, SilentReporter
from flowspec.train.watchdog import find_nonfinite

SPEC = """\
name: watched
data:
  dataset: {moons: {n_train: 512, n_test: 256}}
model:
  input: [2]
  prior: diag_gaussian
  flow:
    - affine_coupling: {parity: 0, net: {mlp: {hidden: [16]}}}
    - actnorm
    - affine_coupling: {parity: 1, net: {mlp: {hidden: [16]}}}
train:
  batch_size: 64
  steps: 40
  log_every: 4
  checkpoint_every: 2
  max_bad_steps: 2
  optimizer: {adam: {lr: 0.01}}
  sample_every: 0
"""


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "watched.yaml"
    path.write_text(SPEC)
    return path


def _actnorm(flow):
    return next(m for nid, m in flow.node_items() if nid.endswith("actnorm"))


def test_divergence_names_the_node_its_spec_line_and_how_to_resume(spec_path, tmp_path):
    lines: list[str] = []

    def poison(step):  # an overflowing scale (finite weights, infinite output)
        if step == 3:
            with torch.no_grad():
                _actnorm(trainer_flow[0]).log_scale.fill_(100.0)

    trainer_flow = []
    from flowspec.train import make_request
    from flowspec.train.callbacks import StepCallback
    from flowspec.train.loop import Trainer

    trainer = Trainer(make_request(load_spec(spec_path), out=tmp_path),
                      reporter=PlainReporter(lines.append), callbacks=[StepCallback(poison)])
    trainer_flow.append(trainer.flow)
    with pytest.raises(FlowspecError) as info:
        trainer.run()
    text = str(info.value)
    assert "training diverged: 2 consecutive non-finite losses" in text
    assert "the output of node 'flow.1.actnorm'" in text
    assert f"{spec_path}:9:7" in text, text  # the actnorm line of the spec
    assert f"flowspec train --resume {trainer.run_dir} --set train.optimizer.adam.lr=0.001" \
        in text
    assert "step 2" in text  # the last checkpoint, which is finite and resumable
    assert any("flow.1.actnorm" in line for line in lines)
    assert trainer.flow.watch is None
    flowspec.load(trainer.run_dir)  # the kept checkpoint loads


def test_culprits_weights_input_prior_and_objective(spec_path):
    flow = flowspec.api.build_flow(load_spec(spec_path)).train()
    x = torch.randn(8, 2)
    flow.log_prob(x)  # actnorm init
    assert find_nonfinite(flow, lambda: flow.log_prob(x)).kind == "objective"

    x_bad = x.clone()
    x_bad[2, 0] = float("nan")
    c = find_nonfinite(flow, lambda: flow.log_prob(x_bad))
    assert (c.kind, c.name, c.what, c.examples, c.batch) == \
        ("node", "flow.0.affine_coupling", "input", 1, 8)

    prior = flow.priors["z"]
    with torch.no_grad():
        prior.log_scale.fill_(-100.0)  # exp(100) overflows in log_prob
    c = find_nonfinite(flow, lambda: flow.log_prob(x))
    assert (c.kind, c.name, c.what) == ("prior", "z", "log-density"), c
    assert "log_prob" not in vars(prior), "the prior's method must be restored"

    with torch.no_grad():
        _actnorm(flow).bias[0] = float("nan")
    c = find_nonfinite(flow, lambda: flow.log_prob(x))
    assert c.kind == "weights" and "actnorm" in c.name
    assert flow.watch is None


def test_diagnosis_restores_buffers():
    spec = load_spec("""
model:
  input: [3]
  flow: [batch_norm, {affine_coupling: {net: {mlp: {hidden: [4]}}}}]
""")
    flow = flowspec.api.build_flow(spec).train()
    x = torch.randn(16, 3) * 5 + 2
    before = {k: v.clone() for k, v in flow.named_buffers()}
    find_nonfinite(flow, lambda: flow.log_prob(x))
    for k, v in flow.named_buffers():
        assert torch.equal(v, before[k]), k


def test_healthy_training_never_runs_the_watchdog(tiny_spec_path, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the watchdog ran on a healthy step")

    monkeypatch.setattr("flowspec.train.callbacks.find_nonfinite", boom)
    train(load_spec(tiny_spec_path), out=tmp_path, reporter=SilentReporter())


def test_non_finite_weights_are_never_checkpointed(spec_path, tmp_path):
    from flowspec.train import make_request
    from flowspec.train.callbacks import StepCallback
    from flowspec.train.loop import Trainer

    def poison(step):
        if step == 4:
            with torch.no_grad():
                _actnorm(trainer.flow).bias.fill_(float("nan"))

    trainer = Trainer(make_request(load_spec(spec_path), out=tmp_path),
                      reporter=SilentReporter(), callbacks=[StepCallback(poison)])
    with pytest.raises(FlowspecError, match="previous checkpoint is kept"):
        trainer.run()
    assert flowspec.load(trainer.run_dir).checkpoint_info["step"] == 2
