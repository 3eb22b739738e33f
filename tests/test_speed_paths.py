"""The fast paths stay correct: the walk frees intermediates, in-place ReLUs keep gradients,
channels_last changes no result, and a Glow traces as one torch.compile graph."""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

import pytest
import torch

from flowspec.api import build_flow
from flowspec.nets.base import build_net
from flowspec.spec import load_spec

GLOW = """\
name: tiny_glow
model:
  input: [2, 8, 8]
  prior: diag_gaussian
  flow:
    - squeeze
    - repeat: 2
      body:
        - actnorm
        - inv_conv1x1: {lu: true}
        - affine_coupling: {mask: channel, scale: sigmoid, net: {glow_cnn: {width: 8}}}
    - factor_out: {prior: conditional_gaussian}
    - squeeze
    - actnorm
    - inv_conv1x1: {lu: true}
    - additive_coupling: {mask: channel, net: {glow_cnn: {width: 8}}}
"""


def _glow(seed: int = 0):
    torch.manual_seed(seed)
    flow = build_flow(load_spec(GLOW))
    x = torch.rand(6, 2, 8, 8) - 0.5
    with torch.no_grad():
        flow.train().log_prob(x)  # data-dependent actnorm init
        for p in flow.parameters():  # leave the zero-initialised identity
            p.add_(0.05 * torch.randn_like(p))
    return flow, x


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_walk_frees_consumed_intermediates(direction):
    flow, x = _glow()
    flow.eval()
    outputs: list[weakref.ref] = []
    alive_at_last: list[int] = []
    nodes = [m for _, m in flow.node_items()]
    first, last = (nodes[0], nodes[-1]) if direction == "forward" else (nodes[-1], nodes[0])
    hook = "register_forward_hook"
    if direction == "inverse":  # the walk calls node.inverse: wrap it to see its output
        def wrap(node, fn):
            def inverse(y, context=None):
                out = fn(y, context)
                if node is first:
                    outputs.append(weakref.ref(out[0]))
                if node is last:
                    alive_at_last.append(sum(r() is not None for r in outputs))
                return out
            node.inverse = inverse
        for node in (first, last):
            wrap(node, node.inverse)
    else:
        getattr(first, hook)(lambda m, i, o: outputs.append(weakref.ref(o[0])))
        last.register_forward_pre_hook(
            lambda m, i: alive_at_last.append(sum(r() is not None for r in outputs)))
    with torch.no_grad():
        if direction == "forward":
            flow.log_prob(x)
        else:
            flow.sample(4)
    assert outputs and alive_at_last == [0]  # the first node's output died on the way


@pytest.mark.parametrize("norm", ["none", "actnorm"])
def test_glow_cnn_inplace_relu_keeps_outputs_and_gradients(norm):
    torch.manual_seed(0)
    net = build_net({"glow_cnn": {"width": 8, "zero_init": False, "norm": norm}},
                    (3, 4, 4), (6, 4, 4))
    plain = copy.deepcopy(net)
    for m in plain.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    assert any(getattr(m, "inplace", False) for m in net.modules())
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    outs = []
    for n in (net, plain):
        y = n(x)
        (y.sin().sum()).backward()
        outs.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in n.parameters()]))
        x.grad = None
    (ya, gxa, gpa), (yb, gxb, gpb) = outs
    assert torch.equal(ya, yb) and torch.equal(gxa, gxb)
    assert all(torch.equal(a, b) for a, b in zip(gpa, gpb))


def test_channels_last_flow_gives_the_same_results():
    flow, x = _glow()
    cl = copy.deepcopy(flow).to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
               and not p.is_contiguous() for p in cl.parameters())
    lp, lp_cl = flow.log_prob(x), cl.log_prob(x)
    assert torch.allclose(lp, lp_cl, rtol=1e-5, atol=1e-4)
    lp.sum().backward()
    lp_cl.sum().backward()
    for a, b in zip(flow.parameters(), cl.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-4)
    flow.eval()
    cl.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        s = flow.sample(4, temperature=0.7)
        torch.manual_seed(3)
        s_cl = cl.sample(4, temperature=0.7)
    assert torch.allclose(s, s_cl, atol=1e-4)


def test_glow_traces_as_one_compiled_graph():
    """No graph break (fullgraph=True) in log_prob or sampling; the 1x1 inverse cache
    is bypassed under torch.compile rather than breaking the graph."""
    flow, x = _glow()
    flow.train()
    expected = flow.log_prob(x)
    torch._dynamo.reset()
    got = torch.compile(flow.log_prob, backend="eager", fullgraph=True)(x)
    assert torch.allclose(got, expected, atol=1e-4)
    flow.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = flow.sample(3, temperature=0.7)
        torch.manual_seed(1)
        b = torch.compile(flow.sample, backend="eager", fullgraph=True)(3, temperature=0.7)
    torch._dynamo.reset()
    assert torch.allclose(a, b, atol=1e-4)


def test_train_channels_last_option_trains_the_same_model(tmp_path):
    from fakedata import write_mnist

    from flowspec.train import train
    from flowspec.train.report import SilentReporter

    write_mnist(tmp_path / "data" / "mnist", n_train=32, n_test=8)
    spec_path = Path(__file__).parent.parent / "specs" / "glow_mnist.yaml"
    flows = []
    for cl in (False, True):
        overrides = ["train.steps=2", "train.eval_batches=1", "train.batch_size=8",
                     f"train.channels_last={str(cl).lower()}"]
        spec = load_spec(spec_path, overrides, quick=True)
        result = train(spec, out=tmp_path / f"cl{cl}", data_dir=tmp_path / "data",
                       reporter=SilentReporter())
        flows.append(result.flow)
    convs = [p for p in flows[1].parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last)
                         and not p.is_contiguous() for p in convs)
    for a, b in zip(flows[0].state_dict().values(), flows[1].state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4)
