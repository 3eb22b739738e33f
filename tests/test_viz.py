"""Pictures say what they show: labelled rows, visible tiles, marked failures, honest panels."""

from __future__ import annotations

import pytest
import torch

import flowspec
from flowspec.viz.grid import BACKGROUND, BAD_CROSS, BAD_FILL, grid_image, upscale_factor
from flowspec.viz.notes import SampleWarning, collect_warnings, nonfinite_rows, run_title

IMAGE_SPEC = """\
name: tiny_images
data: {dataset: mnist}
model:
  input: [1, 8, 8]
  flow:
    - squeeze
    - affine_coupling: {mask: channel, net: {glow_cnn: {width: 4}}}
    - unsqueeze
sample: {n: 12, temperature: 0.7}
"""

ENERGY_SPEC = """\
name: tiny_energy
model:
  input: [2]
  flow: [{planar: {init_scale: 0.5}}, {planar: {init_scale: 0.5}}]
train: {objective: reverse_kl, target: U2, batch_size: 64, steps: 4}
sample: {n: 777}
"""


def _tiles(n, value, size=8, c=1):
    return torch.full((n, c, size, size), value, dtype=torch.uint8)


def _nan_every(flow, monkeypatch, every=4):
    """Make every ``every``-th sample of ``flow`` NaN (as a diverged inverse would)."""
    real = flow.sample

    def sample(n, *, temperature=1.0, context=None):
        x = real(n, temperature=temperature, context=context)
        x[::every] = float("nan")
        return x

    monkeypatch.setattr(flow, "sample", sample)


@pytest.fixture
def capture_figures(monkeypatch):
    """Keep every matplotlib figure the viz modules save (a hook on ``save_figure``)."""
    import flowspec.viz.energy as energy
    import flowspec.viz.points as points
    import flowspec.viz.trace as trace

    kept = []
    real = points.save_figure

    def save(fig, path, dpi=100):
        kept.append(fig)
        fig.canvas.draw()  # lay out now: the figure is closed by the real save
        return real(fig, path, dpi)

    for mod in (points, energy, trace):
        monkeypatch.setattr(mod, "save_figure", save)
    return kept


def _titled(fig, text):
    return [ax for ax in fig.axes if text in ax.get_title()]


# -- image grids ------------------------------------------------------------------------

def test_upscale_brings_small_tiles_to_64_px():
    assert upscale_factor(32, 32, 64) == 2
    assert upscale_factor(28, 28, 64) == 3
    assert upscale_factor(8, 8, 64) == 8
    assert upscale_factor(64, 64, 64) == 1 and upscale_factor(100, 80, 64) == 1


def test_grid_layout_labels_separators_and_marks():
    rows = [_tiles(4, 40), _tiles(4, 120), _tiles(4, 200)]
    bad = [torch.tensor([False, True, False, False]), torch.zeros(4, dtype=torch.bool),
           torch.zeros(4, dtype=torch.bool)]
    plain = grid_image(rows)
    labelled = grid_image(rows, labels=["T = 0", "T = 0.5", "T = 1"], title="a title",
                          bad=bad)
    tile, sep = 64, 2  # 8 px tiles scaled x8, 2 px separators
    assert plain.size == (4 * (tile + sep) + sep, 3 * (tile + sep) + sep)
    label_w = labelled.size[0] - plain.size[0]
    title_h = labelled.size[1] - plain.size[1]
    assert label_w > 30 and title_h > 10  # room for the labels and the title
    px = labelled.load()
    for r, value in enumerate((40, 120, 200)):
        top = title_h + sep + r * (tile + sep)
        # each row's label is drawn (dark text) in its own band at the left
        band = [px[x, y] for x in range(label_w) for y in range(top, top + tile)]
        assert min(sum(p) for p in band) < 200
        # separators (white) between tiles, tile content inside
        for k in range(4):
            left = label_w + sep + k * (tile + sep)
            assert px[left - 1, top + tile // 2] == BACKGROUND
            if (r, k) != (0, 1):
                assert px[left + tile // 2, top + 5] == (value,) * 3
        assert px[label_w + 10, top - 1] == BACKGROUND  # horizontal separator above the row
    # the non-finite tile is red with a white cross: never black
    left, top = label_w + sep + (tile + sep), title_h + sep
    assert px[left + 2, top + tile // 2] == BAD_FILL
    assert px[left + tile // 2, top + tile // 2] == BAD_CROSS


def test_nonfinite_rows_counts_examples():
    x = torch.zeros(5, 1, 2, 2)
    x[1, 0, 0, 0] = float("nan")
    x[3, 0, 1, 1] = float("inf")
    assert nonfinite_rows(x).tolist() == [False, True, False, True, False]
    assert not nonfinite_rows(torch.zeros(3, dtype=torch.long)).any()


def test_image_temperature_grid_marks_and_counts_nonfinite(tmp_path, monkeypatch):
    from PIL import Image

    from flowspec.sampling import sample_figure

    flow = flowspec.load(IMAGE_SPEC)
    _nan_every(flow, monkeypatch, every=4)
    with collect_warnings() as notes:
        path = sample_figure(flow, tmp_path / "t.png", temperatures=[0.5, 1.0])
    # default: 8 per row for a temperature grid; 2 of every 8 are NaN
    assert notes == ["4 of 16 samples are non-finite (marked red)"]
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    assert w > 8 * 66 and h > 2 * 66  # 8 px tiles upscaled to 64
    colours = rgb.getcolors(maxcolors=1 << 20)
    red = sum(count for count, c in colours if c == BAD_FILL)
    assert red > 4 * 64 * 64 * 0.5  # four red tiles (minus their crosses)


def test_single_temperature_grid_uses_spec_n(tmp_path, monkeypatch):
    from PIL import Image

    from flowspec.sampling import sample_figure

    flow = flowspec.load(IMAGE_SPEC)
    _nan_every(flow, monkeypatch, every=100)  # only sample 0
    with collect_warnings() as notes:
        path = sample_figure(flow, tmp_path / "one.png")  # spec: n 12 -> 4 x 3 grid
    assert notes == ["1 of 12 samples are non-finite (marked red)"]
    with Image.open(path) as im:
        assert im.size[0] == 4 * 66 + 2


def test_warnings_reach_python_users():
    from flowspec.viz.notes import warn_nonfinite

    with pytest.warns(SampleWarning, match="3 of 10 samples are non-finite"):
        warn_nonfinite(3, 10)


# -- 2-D flows ------------------------------------------------------------------------

def test_2d_temps_give_one_panel_each_and_spec_n(tiny_spec_path, tmp_path, capture_figures,
                                                 monkeypatch):
    from flowspec.sampling import sample_figure

    flow = flowspec.load(tiny_spec_path)
    _nan_every(flow, monkeypatch, every=64)  # 2 of the spec's 128
    with collect_warnings() as notes:
        sample_figure(flow, tmp_path / "s.png", temperatures=[0.5, 0.8, 1.0])
    (fig,) = capture_figures
    panels = [ax for ax in fig.axes if "samples, T =" in ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "128 samples, T = 0.5", "128 samples, T = 0.8", "128 samples, T = 1"]
    assert all("2 of 128 non-finite, dropped" in ax.get_title() for ax in panels)
    assert len(notes) == 3 and notes[0].startswith("2 of 128 samples are non-finite")
    assert _titled(fig, "data (") and _titled(fig, "learned density")
    assert any(ax.get_ylabel() == "p(x)" for ax in fig.axes)  # the density's colorbar
    assert fig._suptitle.get_text() == "tiny"  # untrained: no step, no NLL


def test_nonfinite_density_values_are_counted_not_hidden(tiny_spec_path, capture_figures,
                                                         tmp_path, monkeypatch):
    from flowspec.viz.points import plot_samples_2d

    flow = flowspec.load(tiny_spec_path)
    real = flow.log_prob

    def log_prob(x, context=None):
        lp = real(x, context)
        return torch.where(x[:, 0] > 0, torch.full_like(lp, float("nan")), lp)

    monkeypatch.setattr(flow, "log_prob", log_prob)
    with collect_warnings() as notes:
        s = torch.randn(50, 2)
        plot_samples_2d(flow, torch.cat([s, -s]), tmp_path / "d.png")  # symmetric axes
    (density,) = _titled(capture_figures[0], "learned density")
    assert "20000 of 40000 grid values non-finite, shown as 0" in density.get_title()
    assert notes == ["20000 of 40000 grid values of the density are non-finite (shown as 0)"]


def test_2d_n_is_per_temperature(tiny_spec_path, tmp_path, capture_figures):
    from flowspec.sampling import sample_figure

    flow = flowspec.load(tiny_spec_path)
    sample_figure(flow, tmp_path / "s.png", n=50, temperatures=[1.0])
    (fig,) = capture_figures
    (panel,) = _titled(capture_figures[0], "samples, T = 1")
    assert panel.collections[0].get_offsets().shape[0] == 50


def test_run_title_from_checkpoint_info(tiny_spec_path):
    flow = flowspec.load(tiny_spec_path)
    flow.checkpoint_info = {"step": 400, "metrics": {"step": 400, "nll_nats": 2.4123}}
    assert run_title(flow) == "tiny · step 400 · val NLL 2.41 nats"
    flow.checkpoint_info = {"step": 400, "metrics": {"step": 300, "bits_per_dim": 3.8412,
                                                     "nll_nats": -1000.0}}
    assert run_title(flow) == "tiny · step 400 · val NLL 3.84 bits/dim (at step 300)"


# -- energies ------------------------------------------------------------------------

def test_energy_temps_panels_n_and_fit_in_title(tmp_path, capture_figures):
    from flowspec.sampling import sample_figure

    torch.manual_seed(0)
    flow = flowspec.load(ENERGY_SPEC)
    sample_figure(flow, tmp_path / "e.png", n=300, temperatures=[0.5, 1.0])
    (fig,) = capture_figures
    hists = _titled(fig, "samples of q")
    assert [ax.get_title() for ax in hists] == ["300 samples of q, T = 0.5",
                                                "300 samples of q, T = 1"]
    for ax in hists:  # histogram counts: the 300 samples (a few may fall off [-4, 4]²)
        assert 290 <= ax.collections[0].get_array().sum() <= 300
    assert sum(ax.get_ylabel() in ("density", "samples per bin") for ax in fig.axes) == 4
    title = fig._suptitle.get_text()
    assert title.startswith("tiny_energy · KL ") and "ESS" in title and "300 samples" in title


def test_energy_default_n_is_the_specs(tmp_path, capture_figures):
    from flowspec.sampling import sample_figure

    sample_figure(flowspec.load(ENERGY_SPEC), tmp_path / "e.png")
    assert _titled(capture_figures[0], "777 samples of q, T = 1")


# -- trace ---------------------------------------------------------------------------

def test_trace_rows_share_limits(tiny_spec_path, tmp_path, capture_figures):
    from flowspec.viz.trace import plot_trace

    flow = flowspec.load(tiny_spec_path)
    with torch.no_grad():  # make the middle node spread points far out
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(200, 2)
    plot_trace(flow, x, tmp_path / "t.png", n_samples=200)
    (fig,) = capture_figures
    rows = {}
    for ax in fig.axes:
        if ax.get_title():
            rows.setdefault(round(ax.get_position().y0, 2), []).append(ax)
    assert len(rows) == 2
    for axes in rows.values():
        assert len(axes) == 3  # data/latent + two couplings
        assert len({ax.get_xlim() for ax in axes}) == 1
        assert len({ax.get_ylim() for ax in axes}) == 1


# -- the training loop -----------------------------------------------------------------

def test_training_loop_reports_nonfinite_samples(tiny_spec_path, tmp_path, monkeypatch):
    from flowspec.compile import Flow
    from flowspec.spec import load_spec
    from flowspec.train import train
    from flowspec.train.report import PlainReporter

    real = Flow.sample

    def sample(self, n, *, temperature=1.0, context=None):
        x = real(self, n, temperature=temperature, context=context)
        x[:3] = float("nan")
        return x

    monkeypatch.setattr(Flow, "sample", sample)
    lines = []
    spec = load_spec(tiny_spec_path, ["train.steps=4"])
    train(spec, out=tmp_path, device="cpu", reporter=PlainReporter(lines.append))
    want = "warning: 3 of 128 samples are non-finite (dropped from the plot) at T = 1"
    assert any(line.endswith(want) for line in lines), lines


def test_slow_density_is_drawn_on_a_coarser_grid_and_says_so(tiny_spec_path, capture_figures,
                                                              tmp_path, monkeypatch):
    """A flow whose log_prob is slow (a CNF: an ODE solve per point) gets a grid that fits
    the time budget instead of an hour-long picture -- and the picture's caller hears it."""
    import time

    from flowspec.viz.points import plot_samples_2d

    flow = flowspec.load(tiny_spec_path)
    real = flow.log_prob

    def slow_log_prob(x, context=None):
        time.sleep(2e-5 * x.shape[0])
        return real(x, context)

    monkeypatch.setattr(flow, "log_prob", slow_log_prob)
    monkeypatch.setenv("FLOWSPEC_GRID_SECONDS", "0.2")
    with collect_warnings() as notes:
        s = torch.randn(50, 2)
        plot_samples_2d(flow, torch.cat([s, -s]), tmp_path / "d.png")
    (density,) = _titled(capture_figures[0], "learned density")
    cells = density.collections[0].get_array().size
    assert 40 * 40 <= cells < 200 * 200
    (note,) = notes
    assert "not 200x200" in note and "FLOWSPEC_GRID_SECONDS" in note
