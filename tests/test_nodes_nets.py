"""The mlp and resnet conditioners beyond the generic net contract."""

from __future__ import annotations

import copy

import pytest
import torch

from flowspec.errors import ShapeError
from flowspec.nets import build_net
from flowspec.nets.mlp import ACTIVATIONS


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_mlp_activations(activation):
    torch.manual_seed(0)
    net = build_net({"mlp": {"hidden": [6, 5], "activation": activation, "zero_init": False}},
                    (2, 2), (3,))
    acts = [m for m in net.modules() if isinstance(m, ACTIVATIONS[activation])]
    assert len(acts) == 2
    assert net(torch.randn(4, 2, 2)).shape == (4, 3)


def test_mlp_sees_flattened_input_and_context():
    net = build_net({"mlp": {"hidden": [7]}}, (2, 3), (4, 2), context_shape=(5,))
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == 2 * 3 + 5
    assert net(torch.randn(3, 2, 3), torch.randn(3, 5)).shape == (3, 4, 2)


def test_resnet_rejects_vectors():
    with pytest.raises(ShapeError, match="use net: mlp"):
        build_net("resnet", (6,), (4,))
    with pytest.raises(ShapeError, match="spatial size"):
        build_net("resnet", (2, 4, 4), (2, 2, 2))


def test_resnet_context_channels():
    vec = build_net({"resnet": {"blocks": 1, "width": 4}}, (2, 4, 4), (2, 4, 4), (3,))
    assert vec.inp.weight.shape[1] == 2 + 3
    img = build_net({"resnet": {"blocks": 1, "width": 4}}, (2, 4, 4), (2, 4, 4), (1, 4, 4))
    assert img.inp.weight.shape[1] == 2 + 1
    x = torch.randn(2, 2, 4, 4)
    assert img(x, torch.randn(2, 1, 4, 4)).shape == (2, 2, 4, 4)
    assert vec(x, torch.randn(2, 3)).shape == (2, 2, 4, 4)


def test_resnet_weight_norm_survives_copy_dtype_and_state_dict():
    torch.manual_seed(0)
    spec = {"resnet": {"blocks": 2, "width": 4, "zero_init": False}}
    net = build_net(spec, (2, 4, 4), (4, 4, 4))
    assert torch.nn.utils.parametrize.is_parametrized(net.inp)
    plain = build_net({"resnet": {"blocks": 2, "width": 4, "weight_norm": False}},
                      (2, 4, 4), (4, 4, 4))
    assert not torch.nn.utils.parametrize.is_parametrized(plain.inp)
    x = torch.randn(3, 2, 4, 4)
    twin = copy.deepcopy(net).double()
    assert torch.allclose(twin(x.double()).float(), net(x), atol=1e-5)
    fresh = build_net(spec, (2, 4, 4), (4, 4, 4))
    fresh.load_state_dict(net.state_dict())
    assert torch.equal(fresh(x), net(x))
