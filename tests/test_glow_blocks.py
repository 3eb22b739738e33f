"""Glow building blocks: actnorm init, 1x1 conv inverse cache, glow_cnn, conditional priors."""

from __future__ import annotations

import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.distributions import PRIORS
from flowspec.errors import FlowspecError, ShapeError
from flowspec.nets.base import build_net


def _actnorm(shape):
    return NODES.build("actnorm", tuple(shape))


# -- actnorm -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4, 5), (6,), (2, 7)])
def test_actnorm_init_gives_zero_mean_unit_variance_per_channel(shape):
    torch.manual_seed(0)
    node = _actnorm(shape).train()
    x = torch.randn(64, *shape) * torch.linspace(0.5, 4.0, shape[0]).reshape(
        shape[0], *([1] * (len(shape) - 1))) + 3.0
    y, ld = node(x)
    assert bool(node.initialized)
    per_channel = y.transpose(0, 1).reshape(shape[0], -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(shape[0]), atol=1e-5)
    assert torch.allclose(per_channel.var(1, unbiased=False), torch.ones(shape[0]), atol=1e-4)
    positions = 1
    for d in shape[1:]:
        positions *= d
    assert torch.allclose(ld, node.log_scale.sum().expand(64) * positions)


def test_actnorm_initialises_once_and_not_in_eval():
    node = _actnorm((2, 3, 3))
    node.eval()
    x = torch.randn(8, 2, 3, 3) * 5
    y, _ = node(x)
    assert torch.equal(y, x) and not bool(node.initialized)  # eval: no init, identity
    node.train()
    node(x)
    bias = node.bias.detach().clone()
    node(torch.randn(8, 2, 3, 3) * 100)  # a second batch must not re-initialise
    assert torch.equal(node.bias.detach(), bias)


def test_actnorm_zero_variance_channel_keeps_unit_scale():
    node = _actnorm((2, 2, 2))
    x = torch.randn(16, 2, 2, 2)
    x[:, 1] = 7.0
    y, ld = node(x)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert node.log_scale[1].item() == 0.0
    assert torch.allclose(y[:, 1], torch.zeros_like(y[:, 1]))


def test_actnorm_initialized_buffer_round_trips_and_blocks_reinit():
    src = _actnorm((3, 2, 2))
    src(torch.randn(32, 3, 2, 2) * 3 + 1)
    state = src.state_dict()
    assert "initialized" in state and bool(state["initialized"])

    dst = _actnorm((3, 2, 2))
    dst.train()
    dst(torch.randn(4, 3, 2, 2))  # dst initialises itself first...
    dst.load_state_dict(state)    # ...then loads a trained state: must keep it
    dst(torch.randn(32, 3, 2, 2) * 50)
    assert torch.equal(dst.bias, src.bias) and torch.equal(dst.log_scale, src.log_scale)


def test_actnorm_rejects_scalar_shape():
    with pytest.raises(ShapeError):
        NODES.get("actnorm").obj.out_shape(())


# -- inv_conv1x1 -------------------------------------------------------------------------


@pytest.mark.parametrize("lu", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 3), (5,)])
def test_conv1x1_float64_exact_and_logdet_matches_autograd(lu, shape):
    node = NODES.build({"inv_conv1x1": {"lu": lu, "seed": 3}}, shape).double()
    with torch.no_grad():  # move away from the orthogonal init, where log|det| = 0
        for p in node.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, *shape, dtype=torch.float64)
    y, ld = node(x)
    x2, ild = node.inverse(y)
    assert y.dtype == torch.float64
    assert (x2 - x).abs().max() < 1e-12
    assert torch.allclose(ld, -ild, atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda v: node(v.reshape(1, *shape))[0].reshape(-1),
                                             x[0].reshape(-1))
    assert abs(torch.linalg.slogdet(jac)[1].item() - ld[0].item()) < 1e-10
    assert abs(ld[0].item()) > 1e-3


def test_conv1x1_seed_is_deterministic_and_init_is_orthogonal():
    a = NODES.build({"inv_conv1x1": {"seed": 5}}, (4, 2, 2))
    b = NODES.build({"inv_conv1x1": {"seed": 5}}, (4, 2, 2))
    c = NODES.build({"inv_conv1x1": {"seed": 6}}, (4, 2, 2))
    wa, wb, wc = a.weights()[0], b.weights()[0], c.weights()[0]
    assert torch.equal(wa, wb) and not torch.allclose(wa, wc)
    assert torch.allclose(wa @ wa.T, torch.eye(4), atol=1e-5)


@pytest.mark.parametrize("lu", [True, False])
def test_conv1x1_inverse_cache_reused_then_invalidated_by_update(lu):
    node = NODES.build({"inv_conv1x1": {"lu": lu, "seed": 0}}, (3, 2, 2)).eval()
    z = torch.randn(4, 3, 2, 2)
    with torch.no_grad():
        x1, _ = node.inverse(z)
        cached = node._cache
        node.inverse(z)
        assert node._cache is cached  # second call re-used the cached inverse

    node.train()
    opt = torch.optim.SGD(node.parameters(), lr=0.05)
    y, ld = node(torch.randn(8, 3, 2, 2))
    (y.pow(2).mean() - ld.mean() + y[:, 0].mean()).backward()
    opt.step()  # in-place parameter update
    node.eval()
    with torch.no_grad():
        x2, ild = node.inverse(z)
        y2, fld = node(x2)
    assert not torch.allclose(x1, x2)
    assert torch.allclose(y2, z, atol=1e-5) and torch.allclose(fld, -ild)

    # An in-place edit in eval mode (no train() call) must also invalidate it.
    with torch.no_grad():
        next(node.parameters()).mul_(1.5)
        x3, _ = node.inverse(z)
        assert torch.allclose(node(x3)[0], z, atol=1e-5)


def test_conv1x1_cache_invalidated_by_load_state_dict():
    a = NODES.build({"inv_conv1x1": {"seed": 0}}, (3,)).eval()
    b = NODES.build({"inv_conv1x1": {"seed": 1}}, (3,)).eval()
    z = torch.randn(5, 3)
    with torch.no_grad():
        a.inverse(z)
        a.load_state_dict(b.state_dict())
        assert torch.allclose(a.inverse(z)[0], b.inverse(z)[0], atol=1e-6)


def test_conv1x1_cache_not_used_when_grads_are_needed():
    node = NODES.build("inv_conv1x1", (3, 2, 2)).eval()
    x, _ = node.inverse(torch.randn(2, 3, 2, 2))
    x.sum().backward()
    assert all(p.grad is not None for p in node.parameters())


# -- glow_cnn ----------------------------------------------------------------------------


def test_glow_cnn_starts_at_zero_and_learns():
    net = build_net({"glow_cnn": {"width": 8}}, (2, 4, 4), (4, 4, 4))
    x = torch.randn(3, 2, 4, 4)
    out = net(x)
    assert out.shape == (3, 4, 4, 4) and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    last = net.net[-1]
    assert last.conv.weight.grad.abs().sum() > 0  # zero init still gets gradient


def test_glow_cnn_context_changes_output():
    net = build_net({"glow_cnn": {"width": 8, "zero_init": False}}, (2, 4, 4), (4, 4, 4), (3,))
    x = torch.randn(2, 2, 4, 4)
    a = net(x, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))
    b = net(x, torch.tensor([[0.0, 1, 0], [0.0, 1, 0]]))
    assert not torch.allclose(a, b)


def test_glow_cnn_rejects_vectors():
    with pytest.raises(ShapeError, match="mlp"):
        build_net("glow_cnn", (4,), (8,))


# -- conditional priors ---------------------------------------------------------------


def test_conditional_gaussian_starts_standard_and_scales_with_temperature():
    prior = PRIORS.build("conditional_gaussian", (4, 2, 2), cond_shape=(4, 2, 2))
    std = PRIORS.build("standard_normal", (4, 2, 2))
    cond = torch.randn(5, 4, 2, 2)
    z = torch.randn(5, 4, 2, 2)
    assert torch.allclose(prior.log_prob(z, cond=cond), std.log_prob(z))
    torch.manual_seed(0)
    s = prior.sample(4000, temperature=0.5, cond=torch.randn(4000, 4, 2, 2))
    assert s.shape == (4000, 4, 2, 2)
    assert abs(s.std().item() - 0.5) < 0.02


def test_conditional_gaussian_depends_on_cond_after_training_step():
    prior = PRIORS.build("conditional_gaussian", (3,), cond_shape=(5,))
    opt = torch.optim.Adam(prior.parameters(), lr=0.1)
    cond = torch.randn(64, 5)
    z = cond[:, :3] * 2.0  # z is predictable from cond
    first = -prior.log_prob(z, cond=cond).mean()
    for _ in range(30):
        opt.zero_grad()
        loss = -prior.log_prob(z, cond=cond).mean()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() - 1.0
    with pytest.raises(FlowspecError):
        prior.sample(2)


def test_conditional_gaussian_with_net_uses_context():
    prior = PRIORS.build({"conditional_gaussian": {"net": {"glow_cnn": {"width": 4}}}},
                         (2, 4, 4), context_shape=(3,), cond_shape=(2, 4, 4))
    cond = torch.randn(6, 2, 4, 4)
    ctx = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    assert prior.sample(6, 0.7, ctx, cond).shape == (6, 2, 4, 4)
    assert prior.log_prob(torch.randn(6, 2, 4, 4), ctx, cond).shape == (6,)


def test_class_conditional_gaussian_learns_class_means():
    prior = PRIORS.build("class_conditional_gaussian", (2,), context_shape=(3,))
    labels = torch.arange(3).repeat(40)
    onehot = torch.eye(3)[labels]
    z = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])[labels] + 0.1 * torch.randn(120, 2)
    opt = torch.optim.Adam(prior.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (-prior.log_prob(z, onehot).mean()).backward()
        opt.step()
    with torch.no_grad():
        s = prior.sample(3, temperature=0.0, context=torch.eye(3))
    assert torch.allclose(s, torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 3.0]]), atol=0.3)
    with torch.no_grad():
        t = prior.sample(300, temperature=2.0, context=torch.eye(3)[torch.zeros(300).long()])
    assert t.shape == (300, 2) and t.std(0).mean() > 0.1


def test_class_conditional_gaussian_needs_context():
    prior = PRIORS.build("class_conditional_gaussian", (4, 2, 2), context_shape=(2, 2))
    assert prior.sample(3, context=torch.randn(3, 2, 2)).shape == (3, 4, 2, 2)
    with pytest.raises(FlowspecError):
        prior.log_prob(torch.randn(3, 4, 2, 2))
    with pytest.raises(FlowspecError):
        PRIORS.build("class_conditional_gaussian", (4,))


# -- actnorm under torch.distributed ---------------------------------------------------------


def _dist_worker(rank: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        gen = torch.Generator().manual_seed(0)
        full = torch.randn(32, 2, 3, 3, generator=gen) * 3 + 1
        node = _actnorm((2, 3, 3))
        node(full[rank * 16:(rank + 1) * 16])  # each replica sees half the batch
        torch.save({"bias": node.bias.detach(), "log_scale": node.log_scale.detach()},
                   f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes (~10 s on a small machine)
def test_actnorm_init_all_reduces_statistics_across_replicas(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "stats")
    mp.spawn(_dist_worker, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
    gen = torch.Generator().manual_seed(0)
    full = torch.randn(32, 2, 3, 3, generator=gen) * 3 + 1
    whole = _actnorm((2, 3, 3))
    whole(full)  # what one process with the global batch computes
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert torch.allclose(got["bias"], whole.bias, atol=1e-5)
        assert torch.allclose(got["log_scale"], whole.log_scale, atol=1e-5)
