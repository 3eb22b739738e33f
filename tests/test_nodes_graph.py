"""The core nodes inside compiled flows: a NICE-style chain and a multi-scale graph."""

from __future__ import annotations

import pytest
import torch

from flowspec.check import check_flow
from flowspec.compile import Flow
from flowspec.errors import SpecError
from flowspec.graph import ContextIR, GraphIR, LatentIR, NodeIR

NET = {"mlp": {"hidden": [8]}}
CNN = {"resnet": {"blocks": 1, "width": 4}}


def chain(nodes, input_shape, prior="standard_normal", context=None) -> GraphIR:
    items, port = [], "x"
    for i, (typ, params) in enumerate(nodes):
        items.append(NodeIR(f"n{i}", typ, params, [port], [f"p{i}"]))
        port = f"p{i}"
    return GraphIR(tuple(input_shape), items, [LatentIR("z", prior, {}, port)], context)


def test_nice_chain_on_images():
    graph = chain([("logit", {}), ("flatten", {})]
                  + [("additive_coupling", {"mask": "alternate", "parity": i, "net": NET})
                     for i in range(4)]
                  + [("diag_scale", {})], (1, 3, 3), prior="logistic")
    flow = Flow(graph)
    x = 0.05 + 0.9 * torch.rand(5, 1, 3, 3)
    assert torch.isfinite(flow.log_prob(x)).all()
    assert torch.allclose(flow.decode(flow.encode(x)), x, atol=1e-5)
    assert all(r.ok for r in check_flow(flow)), check_flow(flow)


def test_multiscale_graph_with_split_and_concat():
    """squeeze -> checkerboard + channel couplings -> split: half leaves, half goes on;
    a second branch is concatenated back."""
    nodes = [
        NodeIR("sq", "squeeze", {}, ["x"], ["s"]),
        NodeIR("c1", "affine_coupling", {"mask": "checkerboard", "net": CNN}, ["s"], ["a"]),
        NodeIR("bn", "batch_norm", {}, ["a"], ["b"]),
        NodeIR("c2", "rq_spline_coupling", {"mask": "channel", "parity": 1, "bins": 4,
                                            "net": CNN}, ["b"], ["c"]),
        NodeIR("sp", "split", {}, ["c"], ["keep", "out"]),
        NodeIR("p", "permutation", {"kind": "random", "seed": 1}, ["keep"], ["k2"]),
        NodeIR("sp2", "split", {"sizes": [1, 3]}, ["k2"], ["u", "v"]),
        NodeIR("cat", "concat", {}, ["v", "u"], ["w"]),
        NodeIR("fl", "flatten", {}, ["w"], ["f"]),
        NodeIR("c3", "affine_coupling", {"scale": "sigmoid", "net": NET}, ["f"], ["top"]),
    ]
    latents = [LatentIR("z1", "standard_normal", {}, "out"),
               LatentIR("z2", "diag_gaussian", {}, "top")]
    flow = Flow(GraphIR((2, 4, 4), nodes, latents, ContextIR(num_classes=3)))
    assert flow.latent_shapes == [(4, 2, 2), (16,)]
    x = torch.randn(6, 2, 4, 4)
    labels = torch.arange(6) % 3
    flow.train()
    flow.log_prob(x, labels)
    flow.eval()
    z = flow.encode(x, labels)
    assert torch.allclose(flow.decode(z, labels), x, atol=1e-5)
    assert flow.sample(4, context=1).shape == (4, 2, 4, 4)
    reports = check_flow(flow)
    assert all(r.ok for r in reports), [r for r in reports if not r.ok]


def test_shape_errors_are_located_problems():
    graph = chain([("squeeze", {})], (3, 5, 4))
    with pytest.raises(SpecError, match="divisible by 2"):
        Flow(graph)
    graph = chain([("affine_coupling", {"mask": "channel"})], (1, 4, 4))
    with pytest.raises(SpecError, match="channel mask needs at least 2 channels"):
        Flow(graph)
    graph = chain([("affine_coupling", {"net": {"resnet": {}}})], (6,))
    with pytest.raises(SpecError, match="use net: mlp"):
        Flow(graph)
