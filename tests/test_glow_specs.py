"""The Glow / RealNVP image specs: they load, have the papers' structure, and round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowspec.api import build_flow
from flowspec.bijectors.actnorm import ActNorm
from flowspec.bijectors.conv1x1 import InvConv1x1
from flowspec.graph import analyse
from flowspec.spec import load_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
NAMES = ["glow_mnist", "glow_cifar10", "realnvp_cifar10", "glow_celeba", "glow_mnist_conditional"]


def _quick_flow(name: str):
    torch.manual_seed(0)
    return build_flow(load_spec(SPECS / f"{name}.yaml", quick=True))


def _context(flow, n: int):
    return torch.arange(n) % flow.num_classes if flow.num_classes else None


@pytest.mark.parametrize(
    "name, latent_shapes",
    [
        ("glow_cifar10", [(6, 16, 16), (12, 8, 8), (48, 4, 4)]),
        ("glow_mnist", [(2, 16, 16), (4, 8, 8), (16, 4, 4)]),
        ("glow_mnist_conditional", [(2, 16, 16), (4, 8, 8), (16, 4, 4)]),
        ("glow_celeba", [(6, 32, 32), (12, 16, 16), (24, 8, 8), (96, 4, 4)]),
        ("realnvp_cifar10", [(6, 16, 16), (6, 16, 16)]),
    ],
)
def test_full_size_spec_has_the_papers_structure(name, latent_shapes):
    spec = load_spec(SPECS / f"{name}.yaml")
    analysis = analyse(spec.graph)
    assert [analysis.shapes[lat.input] for lat in spec.graph.latents] == latent_shapes
    types = [n.type for n in spec.graph.nodes]
    if name.startswith("glow"):
        levels = len(latent_shapes)
        k = spec.document["vars"]["K"]
        assert types.count("squeeze") == levels
        assert types.count("actnorm") == types.count("inv_conv1x1") == levels * k
        assert all(lat.cond is not None for lat in spec.graph.latents[:-1])
    else:  # RealNVP: 3 + 3 couplings per scale, 4 at the end, batch norm after each
        assert types.count("affine_coupling") == 10 == types.count("batch_norm")
        assert types[0] == "logit"


@pytest.mark.parametrize("name", NAMES)
def test_quick_spec_round_trips(name):
    flow = _quick_flow(name)
    n = 4
    x = torch.rand(n, *flow.input_shape) * 0.9 + 0.05
    ctx = _context(flow, n)
    flow.train()
    with torch.no_grad():
        flow.log_prob(x, ctx)  # data-dependent init (actnorm, batch norm statistics)
    flow.eval()
    with torch.no_grad():
        z, ld = flow(x, ctx)
        x2, ild = flow.inverse(z, ctx)
        lp = flow.log_prob(x, ctx)
        s = flow.sample(n, temperature=0.7, context=ctx)
    assert (x2 - x).abs().max() < 1e-4
    assert torch.allclose(ld, -ild, rtol=1e-4, atol=1e-2)
    assert lp.shape == (n,) and torch.isfinite(lp).all()
    assert s.shape == (n, *flow.input_shape) and torch.isfinite(s).all()


def test_quick_glow_trains_a_step_and_checkpoint_does_not_reinit():
    flow = _quick_flow("glow_mnist")
    x = torch.rand(8, *flow.input_shape)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    flow.train()
    loss = -flow.log_prob(x).mean()
    loss.backward()
    opt.step()
    actnorms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert actnorms and all(bool(m.initialized) for m in actnorms)

    fresh = _quick_flow("glow_mnist")
    fresh.load_state_dict(flow.state_dict())
    fresh.train()
    with torch.no_grad():  # a train-mode pass on other data must not re-initialise
        fresh.log_prob(torch.rand(8, *flow.input_shape) * 3)
    flow.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh.log_prob(x), flow.log_prob(x), atol=1e-4)


def test_conditional_glow_samples_depend_on_the_label():
    flow = _quick_flow("glow_mnist_conditional")
    prior = [m for m in flow.priors.values()][-1]
    with torch.no_grad():  # give each class its own top mean
        prior.predictor.linear.weight.normal_()
    flow.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = flow.sample(3, temperature=0.0, context=1)
        torch.manual_seed(1)
        b = flow.sample(3, temperature=0.0, context=7)
    assert not torch.allclose(a, b)


def test_cached_inverse_sampling_matches_reinverting():
    flow = _quick_flow("glow_cifar10")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.01 * torch.randn_like(p))
    flow.eval()
    convs = [m for m in flow.modules() if isinstance(m, InvConv1x1)]
    with torch.no_grad():
        torch.manual_seed(2)
        cached = flow.sample(3)
        assert all(m._cache is not None for m in convs)
        for m in convs:
            m.cache_inverse = False
        torch.manual_seed(2)
        fresh = flow.sample(3)
    assert torch.allclose(cached, fresh, atol=1e-5)


def test_speed_benchmark_runs_quick_and_models_match(capsys):
    import importlib.util

    path = SPECS.parent / "benchmarks" / "glow_speed.py"
    spec = importlib.util.spec_from_file_location("glow_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = mod.main(["--device", "cpu", "--quick", "--repeats", "1", "--no-compile",
                        "--peers", "hand"])
    out = capsys.readouterr().out
    counts = out.split("parameters:")[1].split("\n")[0].split()
    assert counts[:4:2] == ["flowspec", "hand"]
    assert counts[1] == counts[3]  # same architecture: same parameter count
    assert results["train_eager_over_hand"] > 0 and results["sample_eager_over_hand"] > 0
    assert all(v > 0 for v in results.values())
