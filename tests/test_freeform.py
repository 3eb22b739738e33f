"""Properties of the free-form nodes that the generic contract cannot see: the residual
log-det estimators are unbiased, the spectral norm holds its bound, a fixed-point inverse
that does not converge says so, the CNF regularisers leave the likelihood unchanged, and
nets that break a node's assumption are refused at the spec's line."""

from __future__ import annotations

import math
import textwrap
import warnings

import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.bijectors.logdet_estimators import exact_logdet, roulette_logdet, series_logdet
from flowspec.bijectors.residual import InverseNotConverged
from flowspec.check import jitter_parameters
from flowspec.errors import SpecError
from flowspec.nets import build_net
from flowspec.nets.lipschitz import SNConv2d, SNLinear
from flowspec.spec import load_spec


def _residual(dims: int = 3, lipschitz: float = 0.5, **params):
    torch.manual_seed(0)
    node = NODES.build({"residual": {"net": {"lipschitz_mlp": {"hidden": [16, 16]}},
                                     "lipschitz": lipschitz, **params}}, (dims,)).double()
    jitter_parameters(node, amount=0.5)
    return node


def _g_at(node, x):
    xi = x.clone().requires_grad_(True)
    return xi, node.g(xi, None)


def test_russian_roulette_is_unbiased():
    node = _residual()
    x = torch.randn(1, 3, dtype=torch.float64).expand(256, 3)
    xi, gx = _g_at(node, x)
    exact = float(exact_logdet(xi, gx, False)[0])
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    draws = torch.cat([roulette_logdet(xi, gx, 1, 0.5, False, generator=gen).detach()
                       for _ in range(40)])
    mean, se = float(draws.mean()), float(draws.std()) / len(draws) ** 0.5
    assert abs(mean - exact) < 4 * se + 1e-3, (mean, exact, se)


def test_series_converges_to_exact_and_neumann_gradient_is_unbiased():
    node = _residual()
    x = torch.randn(1, 3, dtype=torch.float64).expand(512, 3)
    xi, gx = _g_at(node, x)
    torch.manual_seed(2)
    series = series_logdet(xi, gx, 40, False, "rademacher")
    assert float(series.mean()) == pytest.approx(float(exact_logdet(xi, gx, False)[0]), abs=0.02)

    param = node.g.net[0].weight

    def grad_of(estimate):
        return torch.autograd.grad(estimate.mean(), param)[0]

    xi, gx = _g_at(node, x)
    ref = grad_of(exact_logdet(xi, gx, True))
    torch.manual_seed(3)
    est = torch.stack([grad_of(roulette_logdet(*_g_at(node, x), 2, 0.5, True))
                       for _ in range(30)]).mean(0)
    assert torch.allclose(est, ref, atol=0.1 * float(ref.abs().max()))


def test_eval_uses_exact_logdet_on_small_dims_and_says_so():
    small, big = _residual(3), _residual(20, exact_dims=16)
    assert small.eval_logdet == "exact"
    assert big.eval_logdet.startswith("russian_roulette")
    small.eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    _, ld1 = small(x)
    _, ld2 = small(x)
    assert torch.equal(ld1, ld2)  # deterministic: no estimator in evaluation


def test_spectral_norm_is_at_most_the_lipschitz_coefficient():
    torch.manual_seed(0)
    net = build_net({"lipschitz_mlp": {"hidden": [32]}}, (4,), (4,))
    net.set_lipschitz(0.7)
    conv = build_net({"lipschitz_cnn": {"width": 5}}, (2, 4, 4), (2, 4, 4))
    conv.set_lipschitz(0.7)
    # fused Adam updates in place without bumping tensor versions: the change is still seen
    opt = torch.optim.Adam([*net.parameters(), *conv.parameters()], lr=0.05, fused=True)
    for _ in range(20):  # the estimate follows the weights as they train
        opt.zero_grad()
        (net(torch.randn(8, 4)).pow(2).mean() + conv(torch.randn(8, 2, 4, 4)).pow(2).mean()
         ).backward()
        opt.step()
    with torch.no_grad():
        for layer in net.spectral_layers():
            assert isinstance(layer, SNLinear)
            w = layer.weight * layer.scale()
            assert float(torch.linalg.matrix_norm(w, 2)) <= 0.7 * 1.01
        for layer in conv.spectral_layers():
            assert isinstance(layer, SNConv2d)
            c_in, (h, w_) = layer.weight.shape[1], layer.u.shape[2:]
            basis = torch.eye(c_in * h * w_).reshape(-1, c_in, h, w_)
            op = torch.nn.functional.conv2d(basis, layer.weight * layer.scale(),
                                            padding=layer.padding).reshape(len(basis), -1)
            assert float(torch.linalg.matrix_norm(op, 2)) <= 0.7 * 1.01


def test_power_iteration_state_is_in_the_state_dict():
    net = build_net({"lipschitz_mlp": {"hidden": [8]}}, (2,), (2,))
    keys = net.state_dict().keys()
    assert any(k.endswith(".u") for k in keys) and any(k.endswith(".v") for k in keys)


def test_fixed_point_non_convergence_is_reported():
    node = _residual(3, lipschitz=0.9, max_iter=2, inverse_tol=1e-12)
    y = 3 * torch.randn(5, 3, dtype=torch.float64)
    with pytest.warns(InverseNotConverged, match="did not converge"):
        x, _ = node.inverse(y)
    assert torch.isnan(x).all()
    node = _residual(3, lipschitz=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConverged)
        x, _ = node.inverse(y)
    assert torch.allclose(node(x)[0], y, atol=1e-6)


def _cnf(**params):
    torch.manual_seed(0)
    node = NODES.build({"cnf": {"net": {"time_mlp": {"hidden": [16]}}, **params}}, (2,)).double()
    jitter_parameters(node, amount=0.5)
    return node


def test_cnf_regularisers_change_the_gradient_not_the_likelihood():
    x = torch.randn(16, 2, dtype=torch.float64)
    plain, reg = _cnf(), _cnf(kinetic=1.0, jacobian_norm=1.0)
    z0, ld0 = plain(x)
    z1, ld1 = reg(x)
    assert torch.allclose(ld0, ld1, atol=1e-12) and torch.allclose(z0, z1, atol=1e-12)
    assert reg.last_regularizer > 0 and plain.last_regularizer == 0
    assert plain.nfe > 0 and reg.nfe == plain.nfe
    g0 = torch.autograd.grad(ld0.sum(), list(plain.parameters()))
    g1 = torch.autograd.grad(ld1.sum(), list(reg.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1))


def test_cnf_hutchinson_trace_is_unbiased_and_adjoint_matches_backprop():
    exact = _cnf()
    hutch = _cnf(trace="hutchinson", probe="gaussian")
    x = torch.randn(1, 2, dtype=torch.float64).expand(400, 2)
    ref = float(exact(x)[1][0].detach())
    torch.manual_seed(4)
    est = hutch(x)[1].detach()
    assert abs(float(est.mean()) - ref) < 4 * float(est.std()) / 20 + 1e-4
    adj = _cnf(adjoint=True, rtol=1e-8, atol=1e-8)
    direct = _cnf(rtol=1e-8, atol=1e-8)
    xs = torch.randn(4, 2, dtype=torch.float64)
    ga = torch.autograd.grad(adj(xs)[1].sum(), list(adj.parameters()))
    gd = torch.autograd.grad(direct(xs)[1].sum(), list(direct.parameters()))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ga, gd))


SPEC = """\
flowspec: 1
data: {{dataset: moons}}
model:
  input: [2]
  flow:
    - actnorm
    - {node}:
        net: {{{net}: {{hidden: [8]}}}}
"""


@pytest.mark.parametrize("node,net,needle", [
    ("residual", "mlp", "Lipschitz-constrained net"),
    ("cnf", "mlp", "net that takes time"),
    ("residual", "time_mlp", "Lipschitz-constrained net"),
])
def test_a_net_that_breaks_the_node_is_a_located_spec_error(tmp_path, node, net, needle):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(SPEC.format(node=node, net=net)))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    (problem,) = err.value.problems
    assert needle in problem.message and problem.loc.line == 7


def test_minibatch_ot_pairs_are_an_optimal_assignment():
    import itertools

    pytest.importorskip("scipy")

    from flowspec.objectives.flow_matching import minibatch_ot_pairs

    gen = torch.Generator().manual_seed(0)
    x, z = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen)
    perm = minibatch_ot_pairs(x, z)
    cost = float(((x - z[perm]) ** 2).sum())
    best = min(float(((x - z[list(p)]) ** 2).sum()) for p in itertools.permutations(range(5)))
    assert cost == pytest.approx(best)


FM_SPEC = """\
flowspec: 1
data: {{dataset: moons}}
model:
  input: [2]
  flow:
{flow}
train:
  objective: {{flow_matching: {{coupling: minibatch_ot}}}}
  batch_size: 64
  steps: 30
  optimizer: {{adam: {{lr: 1.0e-2}}}}
"""


def _fm_objective(tmp_path, flow_yaml):
    from flowspec.api import build_flow
    from flowspec.objectives import build_objective

    spec = load_spec(FM_SPEC.format(flow=flow_yaml))
    flow = build_flow(spec)
    return flow, build_objective(spec, flow, data_dir=tmp_path)


def test_flow_matching_regresses_the_field_and_refuses_flows_it_cannot_train(tmp_path):
    pytest.importorskip("scipy")  # the spec pairs by minibatch OT
    flow, objective = _fm_objective(
        tmp_path, "    - cnf: {net: {time_mlp: {hidden: [32, 32]}}, rtol: 1.0e-3, atol: 1.0e-3}")
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    torch.manual_seed(0)
    losses = []
    for step in range(30):
        loss, stats = objective.loss(flow, step, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(stats["fm_loss"].detach()))
    assert sum(losses[-5:]) < sum(losses[:5])  # the regression learns
    (cnf,) = [node for _, node in flow.node_items() if hasattr(node, "nfe")]
    assert cnf.nfe == 0  # no ODE was solved in training
    with pytest.raises(Exception, match="would not train"):
        _fm_objective(tmp_path, "    - actnorm\n    - cnf: {net: {time_mlp: {hidden: [8]}}}")
    with pytest.raises(Exception, match="exactly one cnf"):
        _fm_objective(tmp_path, "    - cnf: {net: {time_mlp: {hidden: [8]}}}\n    - actnorm")


def test_auto_logdet_trains_with_the_cheap_estimator_on_large_dims(monkeypatch):
    import flowspec.bijectors.residual as residual

    node = _residual(20, exact_dims=16)  # logdet: auto
    seen = []
    monkeypatch.setattr(residual, "roulette_logdet",
                        lambda x, gx, n_exact, *a, **k: seen.append(n_exact) or x.new_zeros(len(x)))
    node.train()
    node(torch.randn(2, 20, dtype=torch.float64))
    node.eval()
    node(torch.randn(2, 20, dtype=torch.float64))
    assert seen == [node.exact_terms, node.eval_exact_terms]


CNF_RUN_SPEC = """\
flowspec: 1
name: cnf_stats
data: {dataset: {moons: {n_train: 256, n_test: 128}}}
model:
  input: [2]
  flow:
    - cnf: {net: {time_mlp: {hidden: [8]}}, rtol: 1.0e-3, atol: 1.0e-3, kinetic: 0.1,
            jacobian_norm: 0.1}
train:
  batch_size: 64
  steps: 4
  log_every: 2
  eval_every: 1
  eval_batches: 1
  sample_every: 0
"""


def test_cnf_runs_log_function_evaluations_and_rnode_integrals(tmp_path, capsys):
    import json

    from flowspec.train import train

    result = train(CNF_RUN_SPEC, out=tmp_path, data_dir=tmp_path)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    trained = [r for r in rows if r["split"] == "train"]
    evaluated = [r for r in rows if r["split"] != "train"]
    assert trained and evaluated
    for row in trained:  # the training solve: NFE and the unweighted RNODE integrals
        assert row["nfe"] >= 8 and row["rnode_kinetic"] > 0 and row["rnode_jacobian"] > 0
    for row in evaluated:  # evaluation integrates no regulariser
        assert row["nfe"] >= 8 and "rnode_kinetic" not in row
    assert " nfe=" in capsys.readouterr().out  # the log line shows it
    flow = result.flow
    (cnf,) = [node for _, node in flow.node_items() if hasattr(node, "nfe")]
    from flowspec.objectives.likelihood import MaximumLikelihood

    out = MaximumLikelihood.evaluate_trained(flow, flow.spec, data_dir=tmp_path)
    assert out["nfe"] == cnf.nfe > 0  # `flowspec eval` prints it (one batch here)
    # status.json's best carries the NFE of the best evaluation, and `flowspec runs` shows it
    best = json.loads((result.run_dir / "status.json").read_text())["best"]
    best_row = [r for r in evaluated if r["split"] == "val" and r["step"] == best["step"]]
    assert best_row and best["nfe"] == best_row[0]["nfe"]
    from typer.testing import CliRunner

    from cli.main import app

    listed = CliRunner().invoke(app, ["runs", str(result.run_dir.parent), "--json"])
    assert json.loads(listed.output)[0]["best"]["nfe"] == best["nfe"]
    table = CliRunner().invoke(app, ["runs", str(result.run_dir.parent)], env={"COLUMNS": "300"})
    assert f"(nfe {best['nfe']:.0f})" in table.output


@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_flow_matching_path_times_follow_the_power_law_prior(tmp_path, alpha):
    """s has density (1 + α)(1 - s)^α: mean 1/(2 + α), P(s < 0.1) = 1 - 0.9^(1+α)."""
    _, objective = _fm_objective(tmp_path, "    - cnf: {net: {time_mlp: {hidden: [8]}}}")
    objective.alpha = alpha
    torch.manual_seed(0)
    s = objective.path_times(200_000, torch.zeros(1, dtype=torch.float64))
    assert 0 <= float(s.min()) and float(s.max()) <= 1
    assert float(s.mean()) == pytest.approx(1 / (2 + alpha), abs=3e-3)
    assert float((s < 0.1).double().mean()) == pytest.approx(1 - 0.9 ** (1 + alpha), abs=4e-3)


def test_time_features_feed_sin_cos_of_t():
    from flowspec.nets.time import time_features

    t = torch.tensor([[0.0], [0.25]], dtype=torch.float64)
    f = time_features(t, 2)
    expected = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0],
                             [0.25, 2 ** -0.5, 1.0, 2 ** -0.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(f, expected, atol=1e-12)
    assert time_features(t, 0) is t


def test_space_features_are_fixed_random_fourier_features_saved_with_the_weights():
    from flowspec.nets.time import TimeMLP

    torch.manual_seed(0)
    net = TimeMLP((2,), (2,), hidden=[8], space_features=16, space_scale=0.5)
    plain = TimeMLP((2,), (2,), hidden=[8])
    assert "frequencies" not in plain.state_dict()  # old checkpoints load unchanged
    freq = net.state_dict()["frequencies"]
    assert freq.shape == (2, 16)
    # B ~ N(0, scale²) in cycles per unit, stored in radians
    assert float((freq / (2 * math.pi)).std()) == pytest.approx(0.5, rel=0.35)
    assert net.layers[0].layer.in_features == 2 + 2 * 16
    torch.manual_seed(1)  # another draw: loading the saved weights restores the features
    other = TimeMLP((2,), (2,), hidden=[8], space_features=16, space_scale=0.5)
    assert not torch.equal(other.frequencies, freq)
    other.load_state_dict(net.state_dict())
    z = torch.randn(5, 2)
    assert torch.equal(other(z, t=0.3), net(z, t=0.3))
    optimizer_sees = {id(p) for p in net.parameters()}
    assert id(net.frequencies) not in optimizer_sees  # fixed, not trained
