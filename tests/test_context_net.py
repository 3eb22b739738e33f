"""model.context_net: the context is embedded once, every node and prior sees the
embedding; it trains, it matters, it survives a checkpoint, and mistakes are located."""

from __future__ import annotations

import pytest
import torch
import yaml
from fakedata import write_mnist

import flowspec
from flowspec.checkpoint import save_checkpoint
from flowspec.errors import SpecError
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import SilentReporter

SPEC = """
model:
  input: [2]
  context: {shape: [3]}
  context_net: {net: {mlp: {hidden: [16], zero_init: false}}, features: 4}
  prior: {gaussian_mixture: {components: 2}}
  flow:
    - repeat: 2
      as: i
      body:
        - maf: {hidden: [16], parity: "${i}"}
        - rq_spline_autoregressive: {hidden: [16], bins: 4, parity: "${i}"}
"""
#: a dict: flowspec.load(text) would first stat the (long) text as a path
SPEC_DICT = yaml.safe_load(SPEC)


def _data(n: int, gen: torch.Generator):
    """x ~ N(A c, 0.1^2 I): the context decides where the data are."""
    c = torch.randn(n, 3, generator=gen)
    a = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.5, -1.0]])
    return c @ a.t() + 0.1 * torch.randn(n, 2, generator=gen), c


def test_nodes_see_the_embedding_and_it_runs_once(monkeypatch):
    flow = flowspec.load(SPEC_DICT)
    assert flow.context_shape == (3,) and flow.node_context_shape == (4,)
    for _, node in flow.node_items():
        assert node.context_shape == (4,)
    calls = []
    net_forward = flow.context_net.forward
    monkeypatch.setattr(flow.context_net, "forward",
                        lambda *a, **k: calls.append(1) or net_forward(*a, **k))
    flow.log_prob(torch.randn(5, 2), torch.randn(5, 3))
    flow.sample(5, context=torch.randn(5, 3))
    assert len(calls) == 2, "the context net runs once per call, not once per node"


def test_a_conditional_flow_with_a_context_net_trains_and_uses_the_context(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    flow = flowspec.load(SPEC_DICT).train()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    x_test, c_test = _data(1000, gen)
    with torch.no_grad():
        start = float(-flow.log_prob(x_test, c_test).mean())
    for _ in range(150):
        x, c = _data(256, gen)
        loss = -flow.log_prob(x, c).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()
    with torch.no_grad():
        nll = float(-flow.log_prob(x_test, c_test).mean())
        shuffled = float(-flow.log_prob(x_test, c_test.roll(1, 0)).mean())
    assert nll < start - 1.0, f"no training progress: {start:.3f} -> {nll:.3f}"
    assert shuffled > nll + 1.0, "the density does not depend on the context"
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in flow.context_net.parameters())

    path = tmp_path / "last.safetensors"
    save_checkpoint(path, flow.state_dict(), load_spec(SPEC).to_yaml())
    again = flowspec.load(path)
    assert any(k.startswith("context_net.") for k in again.state_dict())
    with torch.no_grad():
        assert torch.equal(again.log_prob(x_test, c_test), flow.log_prob(x_test, c_test))


def test_class_context_net_through_the_training_loop(tmp_path):
    """Labels -> one-hot -> embedding, trained by `train` and reloaded from its run dir."""
    write_mnist(tmp_path / "data" / "mnist", n_train=32, n_test=8)
    spec = load_spec({
        "name": "cond_maf", "data": {"dataset": "mnist", "preprocess": [{"dequantize": "uniform"}]},
        "model": {"input": [1, 28, 28], "context": {"classes": 10},
                  "context_net": {"net": {"mlp": {"hidden": [8], "zero_init": False}},
                                  "features": 5},
                  "flow": ["flatten", {"logit": {"alpha": 1e-6}}, {"maf": {"hidden": [8]}}]},
        "train": {"steps": 2, "batch_size": 8, "eval_batches": 1, "log_every": 1},
    })
    result = train(spec, out=tmp_path / "runs", data_dir=tmp_path / "data",
                   reporter=SilentReporter())
    flow = flowspec.load(result.run_dir)
    assert flow.node_context_shape == (5,)
    x = torch.rand(4, 1, 28, 28)
    lp = flow.log_prob(x, torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(lp).all()
    assert flow.sample(2, context=torch.tensor([3, 4])).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("body,message", [
    ("  context_net: {net: mlp, features: 4}\n", "model.context is not set"),
    ("  context: {shape: [3]}\n  context_net: {net: {resnet: {}}, features: 4}\n",
     "resnet maps images"),
    ("  context: {shape: [3]}\n  context_net: {net: mlp, features: 0}\n", "integer >= 1"),
    ("  context: {shape: [3]}\n  context_net: {net: {mlp: {hiden: [3]}}, features: 2}\n",
     "did you mean 'hidden'"),
])
def test_mistakes_are_located(body, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  input: [2]\n" + body + "  flow: [maf]\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert message in text and "model.context_net" in text
    line = 3 if "context:" not in body else 4
    assert f"bad.yaml:{line}:" in text
