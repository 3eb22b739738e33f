"""2-D toys: FFJORD's distributions and scalings, determinism, and the entropy floors."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from flowspec.data import DATASETS, PREPROCESS, open_dataset
from flowspec.data.toys import ENTROPY, GENERATORS

TOYS = sorted(GENERATORS) + ["two_gaussians"]


def toy(name, **params):
    source, _ = open_dataset({"dataset": {name: params}, "val_fraction": 0})
    return source


def _gen(name, n, seed=0):
    return GENERATORS[name](n, torch.Generator().manual_seed(seed))


def test_registry_entries_are_documented_and_defaults_match():
    for registry in (DATASETS, PREPROCESS):
        for entry in registry:
            assert entry.doc, entry.name
            target = entry.obj.__init__ if inspect.isclass(entry.obj) else entry.obj
            sig = inspect.signature(target)
            for key, prop in entry.schema["properties"].items():
                assert key in sig.parameters, (entry.name, key)
                if "default" in prop:
                    assert sig.parameters[key].default == prop["default"], (entry.name, key)
    assert {e.category for e in DATASETS} >= {"toy", "image"}
    assert set(TOYS) <= set(DATASETS.names())


@pytest.mark.parametrize("name", TOYS)
def test_shapes_determinism_and_splits(name):
    a = toy(name, n_train=300, n_test=101, seed=3)
    train, test = a.load("train"), a.load("test")
    assert train.x.shape == (300, 2) and test.x.shape == (101, 2)
    assert train.x.dtype == torch.float32 and torch.isfinite(train.x).all()
    assert a.shape == (2,) and not a.discrete and a.entropy is not None
    b = toy(name, n_train=300, n_test=101, seed=3)
    assert torch.equal(b.load("train").x, train.x)  # same seed: same data
    assert not torch.equal(test.x[:100], train.x[:100])  # test is an independent draw
    c = toy(name, n_train=300, n_test=101, seed=4)
    assert not torch.equal(c.load("train").x, train.x)


def test_checkerboard_support_and_entropy():
    x = _gen("checkerboard", 40_000) / 2  # unit squares on [-2, 2]^2
    assert x.abs().max() <= 2
    f = torch.floor(x)
    assert torch.all((f[:, 0] - f[:, 1]) % 2 == 0)  # only the 8 "dark" squares
    counts = torch.unique(f, dim=0, return_counts=True)[1]
    assert len(counts) == 8 and (counts / 40_000 - 1 / 8).abs().max() < 0.01
    # uniform on 8 squares of side 2 (after the x2 scale): area 32
    assert ENTROPY["checkerboard"] == pytest.approx(math.log(32))


def _mc_entropy(x, log_p):
    lp = log_p(x.double())
    return float(-lp.mean()), float(lp.std() / math.sqrt(len(lp)))


def test_8gaussians_entropy_by_monte_carlo():
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centers = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * 4 / 1.414
    s = 0.5 / 1.414

    def log_p(x):
        d2 = ((x[:, None] - centers[None]) ** 2).sum(-1)
        return torch.logsumexp(-d2 / (2 * s * s), 1) - math.log(8 * 2 * math.pi * s * s)

    h, se = _mc_entropy(_gen("8gaussians", 100_000), log_p)
    assert se < 0.005
    assert h == pytest.approx(ENTROPY["8gaussians"], abs=4 * se + 1e-3)


def test_moons_entropy_by_monte_carlo():
    # p(x) = E_a N(x; c(a), 0.2^2 I), angle a uniform on [0, pi] per moon (midpoint grid)
    a = (torch.arange(800, dtype=torch.float64) + 0.5) / 800 * math.pi
    upper = torch.stack([torch.cos(a), torch.sin(a)], 1)
    lower = torch.stack([1 - torch.cos(a), 1 - torch.sin(a) - 0.5], 1)
    curve = torch.cat([upper, lower]) * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)
    s = 0.2

    def log_p(x):
        d2 = torch.cdist(x, curve) ** 2
        return torch.logsumexp(-d2 / (2 * s * s), 1) - math.log(len(curve) * 2 * math.pi * s * s)

    h, se = _mc_entropy(_gen("moons", 20_000), log_p)
    assert h == pytest.approx(ENTROPY["moons"], abs=4 * se + 2e-3)


def test_circles_and_rings_radial_density():
    def radial_log_p(radii, s):
        def log_p(x):
            r = x.norm(dim=1, keepdim=True)
            R = torch.tensor(radii, dtype=torch.float64)[None]
            # exact: ring of radius R blurred by N(0, s^2 I), written with i0e for stability
            lp = -((r - R) ** 2) / (2 * s * s) + torch.log(torch.special.i0e(r * R / (s * s)))
            return torch.logsumexp(lp, 1) - math.log(len(radii) * 2 * math.pi * s * s)
        return log_p

    for name, radii, s in (("circles", [3.0, 1.5], 0.24),
                           ("rings", [3.0, 2.25, 1.5, 0.75], 0.08)):
        x = _gen(name, 20_000)
        h, se = _mc_entropy(x, radial_log_p(radii, s))
        assert h == pytest.approx(ENTROPY[name], abs=4 * se + 2e-3), name
        r = x.norm(dim=1)
        for R in radii:  # equal mass on each ring
            frac = ((r - R).abs() < 4 * s).double().mean()
            assert frac == pytest.approx(1 / len(radii), abs=0.02), (name, R)


def test_other_scalings():
    # swissroll: radius t/5 with t uniform on [1.5pi, 4.5pi] -> mean 3pi/5 (+ small noise bias)
    r = _gen("swissroll", 20_000).norm(dim=1)
    assert float(r.mean()) == pytest.approx(3 * math.pi / 5, abs=0.05)
    # 2spirals: two point-symmetric arms reaching radius ~ (3pi + 0.5)/3
    x = _gen("2spirals", 20_000)
    assert float(x.norm(dim=1).max()) == pytest.approx((3 * math.pi + 0.5) / 3, abs=0.5)
    assert x.mean(0).abs().max() < 0.05
    # pinwheel: |x| = 2 |(f0, f1)|, f0 ~ N(1, 0.3)
    r = _gen("pinwheel", 20_000).norm(dim=1)
    assert float(r.median()) == pytest.approx(2.0, abs=0.05)


def test_two_gaussians_entropy_matches_monte_carlo():
    src = toy("two_gaussians", separation=1.0, std=0.5, n_train=40_000, n_test=10)
    x = src.load("train").x.double()
    s = 0.5

    def log_p(x):
        la = -((x - torch.tensor([-0.5, 0.0], dtype=torch.float64)) ** 2).sum(1) / (2 * s * s)
        lb = -((x - torch.tensor([0.5, 0.0], dtype=torch.float64)) ** 2).sum(1) / (2 * s * s)
        return torch.logaddexp(la, lb) - math.log(2 * 2 * math.pi * s * s)

    h, se = _mc_entropy(x, log_p)
    assert src.entropy == pytest.approx(h, abs=4 * se + 1e-3)
    # far apart: ln 2 + entropy of one Gaussian
    far = toy("two_gaussians", separation=20.0, std=0.5)
    assert far.entropy == pytest.approx(math.log(2) + 1 + math.log(2 * math.pi * 0.25), abs=1e-6)
