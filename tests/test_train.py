"""The training loop: metrics, checkpoints, exact resume after a kill."""

from __future__ import annotations

import json

import pytest
import torch

import flowspec
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import SilentReporter


def _weights(path):
    return flowspec.load(path, ema=False).state_dict()


def test_train_writes_run_dir_and_learns(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path, ["train.steps=60", "train.checkpoint_every=0"])
    result = train(spec, out=tmp_path / "runs", reporter=SilentReporter())
    run = result.run_dir
    assert run.parent == tmp_path / "runs" / "tiny"
    for name in ("spec.yaml", "overrides.json", "run.json", "metrics.jsonl", "last.safetensors",
                 "best.safetensors", "last.state.safetensors"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[-1]["nll_nats"] < train_rows[0]["nll_nats"]
    assert any(r["split"] == "test" and "nll_minus_entropy" in r for r in rows)
    assert list((run / "samples").glob("*.png"))
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and "torch" in info["versions"]


def test_killed_run_resumes_exactly(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path)
    full = train(spec, out=tmp_path / "a", reporter=SilentReporter())

    def kill_at_6(step):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_spec(tiny_spec_path), out=tmp_path / "b", reporter=SilentReporter(),
              on_step=kill_at_6)
    (run_b,) = (tmp_path / "b" / "tiny").iterdir()
    assert json.loads(json.dumps(flowspec.load(run_b).checkpoint_info))["step"] == 4
    resumed = train(None, resume=run_b, reporter=SilentReporter())
    assert resumed.step == full.step == 12
    a, b = _weights(full.run_dir), _weights(run_b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a = flowspec.load(full.run_dir).state_dict()
    ema_b = flowspec.load(run_b).state_dict()
    for k in ema_a:
        assert torch.equal(ema_a[k], ema_b[k]), k


def test_run_dirs_are_never_overwritten(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path, ["train.steps=2"])
    r1 = train(spec, out=tmp_path, reporter=SilentReporter()).run_dir
    r2 = train(spec, out=tmp_path, reporter=SilentReporter()).run_dir
    assert r1 != r2 and r1.is_dir() and r2.is_dir()


def test_divergence_is_reported_not_hidden(tiny_spec_path, tmp_path):
    from flowspec.errors import FlowspecError

    spec = load_spec(tiny_spec_path, ["train.optimizer.adam.lr=1e30", "train.max_bad_steps=2",
                                      "train.steps=200"])
    with pytest.raises(FlowspecError, match="diverged"):
        train(spec, out=tmp_path, reporter=SilentReporter())


def test_ema_decay_ramps_so_short_runs_track_the_weights():
    from torch import nn

    from flowspec.train.optim import EMA

    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.999)
    for step in range(200):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update(step)
    # With a fixed 0.999 decay the average would still sit near the first values (~20);
    # the ramped decay keeps it within a few dozen steps of the current weight.
    assert 150 < float(ema.state["weight"]) < 199


def test_gradient_checkpointing_gives_the_same_gradients():
    spec = load_spec("""
model:
  input: [4, 4, 4]
  flow:
    - actnorm
    - inv_conv1x1
    - affine_coupling: {mask: channel, scale: sigmoid, net: {glow_cnn: {width: 8}}}
    - squeeze
    - affine_coupling: {mask: checkerboard, net: {resnet: {blocks: 1, width: 8}}}
""")
    torch.manual_seed(0)
    flow = flowspec.api.build_flow(spec).train()
    x = torch.rand(6, 4, 4, 4)
    flow.log_prob(x)  # ActNorm's data-dependent init happens once, outside the comparison
    grads = []
    for ckpt in (False, True):
        flow.checkpoint_grads = ckpt
        flow.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        grads.append([p.grad.clone() for p in flow.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)
