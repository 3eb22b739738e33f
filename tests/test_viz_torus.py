"""Torus pictures: angles drawn on one period, wrapped, with the density's mass shown."""

from __future__ import annotations

import math

import torch

import flowspec
from flowspec.viz.torus import torus_density, torus_figure, wrap_angles

SPEC = """
flowspec: 1
name: torus_pic
data: {dataset: {torus: {n_train: 64, n_test: 64}}}
model:
  input: [2]
  prior: uniform
  flow:
    - coupling: {net: {mlp: {hidden: [8], zero_init: false}},
                 transformer: {circular_rq_spline: {bins: 4}}}
"""


def test_wrap_angles_moves_points_onto_one_period_and_counts_them():
    x = torch.tensor([[0.0, 1.0], [math.pi + 0.5, -math.pi - 0.5], [-math.pi, 3.0]])
    out, outside = wrap_angles(x)
    assert outside == 1
    assert torch.allclose(out[1], torch.tensor([-math.pi + 0.5, math.pi - 0.5]), atol=1e-6)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])


def test_density_integrates_to_one_over_the_period():
    torch.manual_seed(0)
    flow = flowspec.load(SPEC)  # a random circular spline: still a density on the torus
    _, dens, mass = torus_density(flow, n=120)
    assert dens.shape == (120, 120)
    assert abs(mass - 1.0) < 0.01, mass


def test_figure_spans_one_period_with_angle_ticks(tmp_path):
    torch.manual_seed(0)
    flow = flowspec.load(SPEC)
    fig = torus_figure(flow, {1.0: flow.sample(200)}, data=torch.rand(50, 2) * 6 - 3)
    axes = fig.axes[:3]
    for ax in axes:
        assert ax.get_xlim() == (-math.pi, math.pi) and ax.get_ylim() == (-math.pi, math.pi)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["−π", "−π/2", "0", "π/2", "π"]
        assert "wraps" in ax.get_xlabel()
    assert "∫p = " in axes[2].get_title()


def test_sampling_picks_the_torus_picture_for_angle_data(tmp_path):
    from flowspec.data import open_spec_dataset
    from flowspec.sampling import draw_samples

    torch.manual_seed(0)
    flow = flowspec.load(SPEC)
    source, prep = open_spec_dataset(flow.spec)
    seen = {}
    import flowspec.viz.torus as torus

    real = torus.torus_figure
    torus.torus_figure = lambda *a, **k: seen.setdefault("fig", real(*a, **k))
    try:
        path = draw_samples(flow, source, prep, tmp_path / "s.png", 100, 1.0,
                            data=source.load("test"))
    finally:
        torus.torus_figure = real
    assert path.exists() and "fig" in seen
