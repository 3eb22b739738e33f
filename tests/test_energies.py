"""Energies U1-U4 (Rezende & Mohamed 2015, Table 1), confinement, and log Z by quadrature."""

from __future__ import annotations

import math

import pytest
import torch

from flowspec.energies import ENERGIES, build_energy, log_partition
from flowspec.errors import FlowspecError, UnknownNameError


def _u(name: str, z1: float, z2: float, **params) -> float:
    energy = build_energy({name: params} if params else name)
    return float(energy(torch.tensor([[z1, z2]], dtype=torch.float64))[0])


def _g(v: float, s: float) -> float:
    """exp(-½ (v/s)²), the paper's Gaussian bump."""
    return math.exp(-0.5 * (v / s) ** 2)


# Expected values written out from the paper's formulas with scalar math.
def test_u1_at_fixed_points():
    # z = (0, 0): ½((0-2)/0.4)² - ln(2 e^{-½(2/0.6)²})
    assert _u("U1", 0, 0) == pytest.approx(12.5 - math.log(2 * _g(2, 0.6)), abs=1e-12)
    # on the ring at a mode: the first term vanishes, the second is -ln(1 + e^{-½(4/0.6)²})
    assert _u("U1", 2, 0) == pytest.approx(-math.log(1 + _g(4, 0.6)), abs=1e-12)
    # z = (1, 3): ‖z‖ = √10
    expect = 0.5 * ((math.sqrt(10) - 2) / 0.4) ** 2 - math.log(_g(-1, 0.6) + _g(3, 0.6))
    assert _u("U1", 1, 3) == pytest.approx(expect, abs=1e-12)


def test_u2_at_fixed_points():
    assert _u("U2", 1, 1) == pytest.approx(0.0, abs=1e-12)  # w1(1) = sin(π/2) = 1
    assert _u("U2", 0, 0.4) == pytest.approx(0.5, abs=1e-12)
    # z1 = -1/3: w1 = sin(-π/6) = -1/2
    assert _u("U2", -1 / 3, 0.3) == pytest.approx(0.5 * (0.8 / 0.4) ** 2, abs=1e-12)


def test_u3_at_fixed_points():
    # z1 = 1: w1 = 1, w2 = 3
    assert _u("U3", 1, 1) == pytest.approx(-math.log(1 + _g(3, 0.35)), abs=1e-12)
    assert _u("U3", 1, -2) == pytest.approx(-math.log(_g(-3, 0.35) + 1), abs=1e-12)
    # z = (2, 0.5): w1 = sin(π) = 0, w2 = 3 e^{-½(1/0.6)²}
    w2 = 3 * _g(1, 0.6)
    expect = -math.log(_g(0.5, 0.35) + _g(0.5 + w2, 0.35))
    assert _u("U3", 2, 0.5) == pytest.approx(expect, abs=1e-9)


def test_u4_at_fixed_points():
    # z1 = 1: w1 = 1, w3 = 3 σ(0) = 1.5
    assert _u("U4", 1, 0) == pytest.approx(-math.log(_g(-1, 0.4) + _g(0.5, 0.35)), abs=1e-12)
    # z = (0, 0): w1 = 0, w3 = 3 σ(-1/0.3)
    w3 = 3 / (1 + math.exp(1 / 0.3))
    assert _u("U4", 0, 0) == pytest.approx(-math.log(1 + _g(w3, 0.35)), abs=1e-12)


def test_u3_u4_are_stable_far_from_both_waves():
    """-log(e^a + e^b) with both tiny must stay finite (the paper's form underflows to inf)."""
    z = torch.tensor([[1.0, 40.0]], dtype=torch.float32)
    for name in ("U3", "U4"):
        u = build_energy({name: {"confine": None}})(z)
        assert torch.isfinite(u).all() and float(u[0]) > 1000


def test_confinement_penalty_and_switch():
    raw = _u("U2", 7, 0, confine=None)
    assert _u("U2", 7, 0) == pytest.approx(raw + 1.0, abs=1e-12)  # relu(7 - 6)² = 1
    raw = _u("U1", -8, 6.5, confine=None)
    assert _u("U1", -8, 6.5) == pytest.approx(raw + 4.0 + 0.25, abs=1e-9)
    assert _u("U1", -8, 6.5, confine=8) == pytest.approx(raw, abs=1e-9)
    assert _u("U4", 3, -2) == _u("U4", 3, -2, confine=None)  # inside the box: unchanged


def test_energies_are_vectorised_and_batch_shaped():
    z = torch.randn(17, 2)
    for name in ("U1", "U2", "U3", "U4", "gaussian"):
        u = build_energy(name)(z)
        assert u.shape == (17,) and u.dtype == torch.float32


@pytest.mark.parametrize("name", ["U1", "U2", "U3", "U4"])
def test_log_partition_is_stable_to_grid_refinement(name):
    energy = build_energy(name)
    coarse, fine = log_partition(energy, n=400), log_partition(energy, n=1600)
    assert abs(coarse - fine) < 1e-3
    assert log_partition(energy, lim=energy.integration_lim() + 4, n=800) == \
        pytest.approx(fine, abs=1e-6)  # a wider box adds nothing


def test_log_partition_matches_closed_forms():
    # Standard normal: Z = 2π (the confinement outside |z_i| = 6 removes ~1e-9 of the mass).
    assert log_partition(build_energy("gaussian")) == pytest.approx(math.log(2 * math.pi),
                                                                    abs=1e-6)
    # U2: the Gaussian cross-section integrates to 0.4√(2π) for every z1, and z1 sees only
    # the confinement: ∫ exp(-relu(|z1| - 6)²) dz1 = 12 + √π.
    expect = math.log(0.4 * math.sqrt(2 * math.pi) * (12 + math.sqrt(math.pi)))
    assert build_energy("U2").log_z == pytest.approx(expect, abs=1e-9)


def test_log_z_needs_confinement_where_the_mass_is_infinite():
    with pytest.raises(FlowspecError, match="confine"):
        _ = build_energy({"U3": {"confine": None}}).log_z
    u1 = build_energy({"U1": {"confine": None}})  # the ring confines itself
    assert u1.log_z == pytest.approx(build_energy("U1").log_z, abs=1e-9)


def test_registry_entries_and_spec_values():
    assert {"U1", "U2", "U3", "U4"} <= set(ENERGIES.names())
    entry = ENERGIES.get("U3")
    assert entry.defaults() == {"confine": 6.0} and entry.doc
    assert build_energy({"U3": {"confine": 8}}).confine == 8
    with pytest.raises(UnknownNameError, match="did you mean 'gaussian'"):
        build_energy("gausian")
