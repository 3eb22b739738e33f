"""Own tables as users have them: discrete columns, train-constant columns, dequantization
of file data, empty splits, array feature selection, delimiters (issue 15)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import write_table

import flowspec
from flowspec.data import open_dataset
from flowspec.errors import DataError, FlowspecError
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import Reporter


def _message(err: FlowspecError) -> str:
    return "\n".join(p.format() for p in err.problems)


def _open(path, preprocess=None, **params):
    return open_dataset({"dataset": {"file": {"path": str(path), **params}},
                         "preprocess": preprocess or []})


def _table(n=200, seed=0):
    """heights (cm), a sex coded 1/2, and a count: what a medical table looks like."""
    rng = np.random.default_rng(seed)
    height = rng.normal(170, 9, n)
    sex = rng.integers(1, 3, n).astype(float)
    visits = rng.poisson(30, n).astype(float)
    return np.stack([height, sex, visits], 1)


class Recorder(Reporter):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def _spec(path, preprocess="[]", steps=2, columns=("height", "sex", "visits")):
    return f"""\
name: table
data:
  dataset: {{file: {{path: {json.dumps(str(path))}, columns: {json.dumps(list(columns))}}}}}
  preprocess: {preprocess}
model:
  input: [{len(columns)}]
  flow:
    - standardize
    - affine_coupling: {{mask: half, parity: 0, net: {{mlp: {{hidden: [8]}}}}}}
train: {{batch_size: 16, steps: {steps}, log_every: 1, sample_every: 0, eval_every: 0}}
"""


# -- discrete columns -----------------------------------------------------------------------
def test_discrete_columns_are_said_at_start_of_a_run(tmp_path):
    path = write_table(tmp_path / "t.csv", _table(), columns=["height", "sex", "visits"])
    rec = Recorder()
    train(load_spec(_spec(path)), out=tmp_path / "runs", reporter=rec)
    warned = [line for line in rec.lines if line.startswith("warning:")]
    assert any("'sex' takes only 2 distinct value(s) (1, 2)" in w and "context" in w
               for w in warned), rec.lines
    assert any("'visits' holds only integers" in w and "dequantize" in w for w in warned)
    assert not any("'height'" in w for w in warned)


def test_dequantize_file_columns_unit_bins_bound(tmp_path):
    path = write_table(tmp_path / "t.csv", _table(), columns=["height", "sex", "visits"])
    source, prep = _open(path, ["dequantize"])
    assert prep.widths.tolist() == [0.0, 1.0, 1.0]
    x = source.load("train").x[:64]
    y = prep(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, 0], x[:, 0])  # the continuous column is untouched
    assert ((y[:, 1:] - x[:, 1:]) >= 0).all() and ((y[:, 1:] - x[:, 1:]) < 1).all()
    assert torch.equal(torch.floor(y[:, 1:]), x[:, 1:])  # each value stays in its bin
    assert any("upper bound" in n for n in prep.notes)
    assert not any(n.startswith("column 'sex'") for n in prep.notes)  # no warning: handled


def test_dequantize_declared_levels_and_bin_width(tmp_path):
    t = _table()
    t[:, 1] = np.where(t[:, 1] == 1, 0.5, 1.0)  # a dose in steps of 0.5
    path = write_table(tmp_path / "t.csv", t, columns=["height", "sex", "visits"])
    _, prep = _open(path, [{"dequantize": {"columns": ["sex"], "levels": {"sex": [0.5, 1.0]}}}])
    assert prep.widths.tolist() == [0.0, 0.5, 0.0]
    assert any(f"{math.log(2):.4g} nats" in n for n in prep.notes)  # the bound's offset
    assert any("'visits' holds only integers" in n for n in prep.notes)  # still warned
    _, prep = _open(path, [{"dequantize": {"columns": [2], "bin_width": {"visits": 2}}}])
    assert prep.widths.tolist() == [0.0, 0.0, 2.0]
    with pytest.raises(DataError, match="not one of its declared levels"):
        _open(path, [{"dequantize": {"columns": ["sex"], "levels": {"sex": [0.5, 2.0]}}}])
    with pytest.raises(DataError, match="bin width is unknown"):
        _open(path, [{"dequantize": {"columns": ["height"]}}])
    with pytest.raises(DataError, match="a table takes only `dequantize`"):
        _open(path, ["scale"])


def test_train_constant_column_is_an_error_with_the_fix(tmp_path):
    from flowspec.data.splits import carve_indices

    t = _table(40)
    t[:, 0] = 170.0
    _, test_idx = carve_indices(40, 0.2, 0)  # the file dataset's seeded test rows
    t[int(test_idx[0]), 0] = 171.0  # varies in the file, constant in the training split
    path = write_table(tmp_path / "t.csv", t, columns=["height", "sex", "visits"])
    with pytest.raises(DataError) as info:
        _open(path)
    msg = _message(info.value)
    assert "column height has the same value (170)" in msg and "training split" in msg
    assert "columns:" in msg


def test_constant_array_feature_advice_is_for_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 3))
    x[:, 1] = 2.0
    np.save(tmp_path / "a.npy", x)
    with pytest.raises(DataError) as info:
        _open(tmp_path / "a.npy")
    msg = _message(info.value)
    assert "feature (0-based index) 1" in msg and "drop: [1]" in msg and "columns:" not in msg
    _, prep = _open(tmp_path / "a.npy", drop=[1])  # the advice works
    assert prep.in_shape == (2,)


# -- empty splits ------------------------------------------------------------------------------
def test_empty_validation_split_is_an_error_never_nll_zero(tmp_path):
    from flowspec.data import DataSplit
    from flowspec.objectives.nll import evaluate_nll

    x = np.random.default_rng(0).normal(size=(3, 2))
    path = write_table(tmp_path / "t.csv", x, columns=["a", "b"])
    ok, prep = open_dataset({"dataset": {"file": {"path": str(path), "test_fraction": 0.4}},
                             "val_fraction": 0.1})  # 2 train rows -> 1 train + 1 val: fine
    assert len(ok.load("val")) == 1
    src, _ = open_dataset({"dataset": {"file": {"path": str(path), "test_fraction": 0.5}},
                           "val_fraction": 0.1})  # 1 train row: val would be empty
    with pytest.raises(DataError, match="validation split is empty"):
        src.load("val")
    flow = flowspec.load(_spec(path, columns=("a", "b")))
    empty = DataSplit(x=torch.zeros(0, 2))
    with pytest.raises(DataError, match="no examples"):
        evaluate_nll(flow, empty, prep)


# -- image files ------------------------------------------------------------------------------
def _image_spec(path, extra=""):
    return f"""\
name: own_images
data:
  dataset: {{file: {{path: {json.dumps(str(path))}{extra}}}}}
  preprocess: [dequantize]
model:
  input: [1, 8, 8]
  flow:
    - flatten
    - additive_coupling: {{mask: alternate, parity: 0, net: {{mlp: {{hidden: [16]}}}}}}
train: {{batch_size: 16, steps: 2, log_every: 1, sample_every: 0}}
sample: {{n: 8}}
"""


def test_uint8_image_file_is_image_data(tmp_path):
    from flowspec.sampling import interpolate_figure, sample_figure

    rng = np.random.default_rng(0)
    np.save(tmp_path / "digits.npy", rng.integers(0, 256, (60, 1, 8, 8), dtype=np.uint8))
    src, prep = _open(tmp_path / "digits.npy")
    assert src.discrete and src.shape == (1, 8, 8) and src.load("train").x.dtype == torch.uint8
    assert prep.n_bits == 8 and prep.dequantize == "uniform"
    result = train(load_spec(_image_spec(tmp_path / "digits.npy")), out=tmp_path / "runs",
                   reporter=Recorder())
    assert "bits_per_dim" in result.metrics
    flow = flowspec.load(result.run_dir)
    assert sample_figure(flow, tmp_path / "s.png").exists()
    assert interpolate_figure(flow, tmp_path / "i.png", pairs=2, steps=3).exists()


def test_declared_images_float_and_opt_out(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    src, _ = _open(tmp_path / "f.npy", images=True)  # [N, H, W] floats in [0, 1]
    assert src.discrete and src.shape == (1, 8, 8)
    assert torch.equal(src.source.table.x[0, 0], torch.from_numpy(np.round(x[0] * 255)).byte())
    np.save(tmp_path / "bad.npy", x * 3)
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        _open(tmp_path / "bad.npy", images=True)
    np.save(tmp_path / "u.npy", rng.integers(0, 256, (20, 1, 2, 2), dtype=np.uint8))
    src, _ = _open(tmp_path / "u.npy", images=False)
    assert not src.discrete and src.load("train").x.dtype == torch.float32


# -- context in natural units -------------------------------------------------------------------
def _conditional_spec(path, standardize=None):
    std = "" if standardize is None else f", standardize: {str(standardize).lower()}"
    return f"""\
name: cond
data:
  dataset: {{file: {{path: {json.dumps(str(path))}, columns: [a, b], context: [target]}}}}
model:
  input: [2]
  context: {{shape: [1]{std}}}
  flow:
    - affine_coupling: {{mask: half, parity: 0, net: {{mlp: {{hidden: [8]}}}}}}
train: {{batch_size: 16, steps: 2, log_every: 1, sample_every: 0}}
"""


def test_context_is_standardized_inside_the_flow(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.normal(150.0, 30.0, 200)
    table = np.stack([rng.normal(size=200), rng.normal(size=200), target], 1)
    path = write_table(tmp_path / "c.csv", table, columns=["a", "b", "target"])
    rec = Recorder()
    result = train(load_spec(_conditional_spec(path)), out=tmp_path / "runs", reporter=rec)
    assert any("context standardization" in line for line in rec.lines), rec.lines
    flow = flowspec.load(result.run_dir)  # statistics come back from the checkpoint
    cs = flow.context_standardizer
    assert bool(cs.fitted) and 130 < float(cs.mean) < 170 and 20 < float(cs.std) < 40
    x = torch.randn(5, 2)
    natural = flow.log_prob(x, context=torch.full((5, 1), 150.0))
    flow.context_standardizer = None  # what the nets see: the standardized context
    scaled = flow.log_prob(x, context=torch.full((5, 1), (150.0 - float(cs.mean)) / float(cs.std)))
    assert torch.allclose(natural, scaled)

    off = train(load_spec(_conditional_spec(path, standardize=False)),
                out=tmp_path / "runs", reporter=Recorder())
    assert flowspec.load(off.run_dir).context_standardizer is None


def test_runs_saved_before_context_standardization_still_load(tmp_path):
    from flowspec.checkpoint import load_weights

    flow = flowspec.load(_conditional_spec(tmp_path / "c.csv"))
    old = {k: v for k, v in flow.state_dict().items() if not k.startswith("context_standardizer")}
    fresh = flowspec.load(_conditional_spec(tmp_path / "c.csv")).eval()
    load_weights(fresh, old, "old.safetensors")
    c = torch.full((3, 1), 150.0)
    assert torch.equal(fresh.context_standardizer(c), c)  # raw, as the old run saw it


# -- declared supports ---------------------------------------------------------------------------
def _support_table(tmp_path, n=200):
    rng = np.random.default_rng(0)
    weight = rng.lognormal(4.2, 0.2, n)  # kg, positive
    score = rng.uniform(1, 99, n)  # a percentage, in (0, 100)
    height = rng.normal(170, 9, n)
    return write_table(tmp_path / "s.csv", np.stack([height, weight, score], 1),
                       columns=["height", "weight", "score"])


def test_declared_support_inserts_a_node_and_samples_stay_inside(tmp_path):
    path = _support_table(tmp_path)
    spec = _spec(path, columns=("height", "weight", "score")).replace(
        'columns: ["height", "weight", "score"]}',
        'columns: ["height", "weight", "score"], support: {weight: positive, score: [0, 100]}}')
    result = train(load_spec(spec), out=tmp_path / "runs", reporter=Recorder())
    flow = flowspec.load(result.run_dir)
    first_id, first = flow.node_items()[0]
    assert first_id == "data.support" and type(first).__name__ == "Support"
    with torch.no_grad():
        x = flow.sample(4000, temperature=3.0)  # a hot temperature pushes toward the edges
    assert torch.isfinite(x).all()
    assert (x[:, 1] > 0).all() and (x[:, 2] >= 0).all() and (x[:, 2] <= 100).all()
    # the stored spec keeps the declaration, so eval/sample build the same flow
    stored = load_spec((result.run_dir / "spec.yaml").read_text())
    assert stored.data["dataset"]["file"]["support"] == {"weight": "positive", "score": [0, 100]}


def test_data_outside_the_declared_support_is_refused(tmp_path):
    path = _support_table(tmp_path)
    with pytest.raises(DataError) as info:
        _open(path, support={"height": [0, 100]}).__getitem__(0).load("train")
    assert "height: row" in _message(info.value) and "outside its declared support (0, 100)" \
        in _message(info.value)
    with pytest.raises(FlowspecError, match="no data column 'wieght'"):
        load_spec(_spec(path).replace('"visits"]}', '"visits"], support: {wieght: positive}}'))


# -- the Python API, as zuko/nflows users call it -------------------------------------------------
def test_log_prob_and_sample_take_numpy_lists_float64_and_natural_context(tmp_path):
    flow = flowspec.load(_conditional_spec(tmp_path / "c.csv"))
    x32 = torch.randn(4, 2)
    ref = flow.log_prob(x32, context=torch.full((4, 1), 150.0))
    for x in (x32.numpy(), x32.tolist(), x32.double()):
        assert torch.allclose(flow.log_prob(x, context=150.0), ref)
    assert torch.allclose(flow.log_prob(x32, context=[[150.0]]), ref)
    assert torch.allclose(flow.log_prob(x32, context=np.full((4, 1), 150.0)), ref)
    assert torch.allclose(flow.log_prob(x32, context=[150.0] * 4), ref)  # [N] for shape [1]
    s = flow.sample(1000, context=150.0)
    assert s.shape == (1000, 2) and not s.requires_grad
    assert flow.sample(3, context=[[150.0]]).numpy().shape == (3, 2)  # no grad: .numpy() works
    assert flow.sample(3, context=[150.0], grad=True).requires_grad


def test_bad_shapes_name_the_expected_shape(tmp_path):
    flow = flowspec.load(_conditional_spec(tmp_path / "c.csv"))
    with pytest.raises(FlowspecError, match=r"x has shape \[4, 3\]; this flow takes \[N, 2\]"):
        flow.log_prob(np.zeros((4, 3)), context=1.0)
    with pytest.raises(FlowspecError, match=r"x\[None\]"):
        flow.log_prob([0.0, 1.0], context=1.0)
    with pytest.raises(FlowspecError, match=r"context has 3 rows for 4 examples"):
        flow.log_prob(np.zeros((4, 2)), context=np.zeros((3, 1)))
    with pytest.raises(FlowspecError, match=r"shape \[4, 2\]; this flow takes \[4, 1\]"):
        flow.log_prob(np.zeros((4, 2)), context=np.zeros((4, 2)))
    with pytest.raises(FlowspecError, match="positive integer"):
        flow.sample(0, context=1.0)
    with pytest.raises(FlowspecError, match="not numeric"):
        flow.log_prob([["a", "b"]], context=1.0)


# -- pictures of real data ------------------------------------------------------------------------
def _people(tmp_path, n=300):
    rng = np.random.default_rng(0)
    height = rng.normal(170, 9, n)
    weight = 22.5 * (height / 100) ** 2 * np.exp(rng.normal(0, 0.12, n))
    age = rng.uniform(18, 80, n)
    bp = 95 + 0.45 * age + rng.normal(0, 9, n)
    return write_table(tmp_path / "people.csv", np.stack([height, weight, age, bp], 1),
                       columns=["height_cm", "weight_kg", "age_years", "systolic_mmHg"])


def _fitted(tmp_path, columns):
    from flowspec.data import open_spec_dataset
    from flowspec.data_statistics import fit_statistics, tensor_batches

    path = _people(tmp_path)
    flow = flowspec.load(_spec(path, columns=columns))
    source, prep = open_spec_dataset(flow.spec)
    fit_statistics(flow, tensor_batches(source.load("train").x))
    return flow, source, prep


def test_2d_picture_uses_the_data_range_and_column_names(tmp_path):
    import matplotlib.pyplot as plt

    from flowspec.viz.points import samples_2d_figure

    flow, source, _ = _fitted(tmp_path, ("height_cm", "weight_kg"))
    test = source.load("test").x
    fig = samples_2d_figure(flow, {1.0: flow.sample(500)}, data=test,
                            names=["height_cm", "weight_kg"])
    data_ax, _, dens_ax = fig.axes[:3]
    x0, x1 = data_ax.get_xlim()
    y0, y1 = data_ax.get_ylim()
    assert 120 < x0 < float(test[:, 0].min()) + 5 and float(test[:, 0].max()) - 5 < x1 < 220
    assert 20 < y0 and y1 < 140  # not ±210 around the origin
    assert data_ax.get_xlabel() == "height_cm" and data_ax.get_ylabel() == "weight_kg"
    mesh = np.asarray(dens_ax.collections[0].get_array())
    assert (mesh > 0.01 * mesh.max()).mean() > 0.2  # the density fills the panel, not a dot
    plt.close(fig)


def test_tables_of_more_columns_draw_a_corner_plot(tmp_path):
    from flowspec.sampling import draw_samples

    cols = ("height_cm", "weight_kg", "age_years", "systolic_mmHg")
    flow, source, prep = _fitted(tmp_path, cols)
    path = draw_samples(flow, source, prep, tmp_path / "pairs.png", 300, 1.0,
                        data=source.load("test"))
    assert path.exists()
    from flowspec.viz.pairs import pair_figure

    fig = pair_figure(flow.sample(300), source.load("test").x, names=list(cols))
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 10  # 4 histograms + 6 pairs
    assert [ax.get_xlabel() for ax in fig.axes[-4:]] == list(cols)
    assert "vs" in fig._suptitle.get_text() and "test rows" in fig._suptitle.get_text()


def test_trace_after_standardize_gives_each_panel_its_axes(tmp_path):
    from flowspec.viz.trace import trace_figure

    flow, source, _ = _fitted(tmp_path, ("height_cm", "weight_kg"))
    fig = trace_figure(flow, source.load("test").x, n_samples=300, names=["height_cm", "w"])
    data_ax = next(ax for ax in fig.axes if ax.get_title() == "data")
    std_ax = next(ax for ax in fig.axes if ax.get_title() == "flow.0.standardize")
    assert data_ax.get_xlim()[0] > 100 and std_ax.get_xlim()[1] < 10  # each its own scale
    assert "axes per panel" in fig._suptitle.get_text()
    assert data_ax.get_xlabel() == "height_cm"


# -- file formats: delimiters ----------------------------------------------------------------------
def test_semicolon_and_pipe_separated_files_are_read(tmp_path):
    for sep in (";", "|", "\t"):
        path = tmp_path / "s.csv"
        path.write_text(f"a{sep}b\n" + "".join(f"{i}.5{sep}{-i}\n" for i in range(20)))
        src, _ = _open(path)
        assert src.shape == (2,) and float(src.source.table.x[:, 1].sum()) == -190.0


def test_decimal_commas_are_named_in_the_error(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("a;b\n" + "".join(f"{i},5;{i}\n" for i in range(10)))
    with pytest.raises(DataError) as info:
        _open(path).__getitem__(0).load("train")
    msg = _message(info.value)
    assert "'0,5' is not a number (fields separated by semicolon)" in msg and "1.5" in msg


# -- messages -------------------------------------------------------------------------------------
def test_repeat_counter_without_as_suggests_as(tmp_path):
    spec = """\
name: r
model:
  input: [2]
  flow:
    - repeat: 2
      body:
        - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [8]}}}
"""
    with pytest.raises(FlowspecError) as info:
        load_spec(spec)
    msg = _message(info.value)
    assert "unknown variable 'i'" in msg and "add `as: i` next to `repeat:`" in msg
    assert "declare it under vars" not in msg


# -- check on conditional specs -------------------------------------------------------------------
SPECS = sorted((Path(__file__).parent.parent / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_check_passes_on_every_shipped_spec(path):
    from flowspec.api import build_flow
    from flowspec.check import check_flow

    flow = build_flow(load_spec(path, quick=True))
    notes = []
    reports = check_flow(flow, max_dims=64, jitter=0.1, notes=notes)
    assert all(r.ok for r in reports), [r for r in reports if not r.ok]
    assert bool(notes) == (flow.context_shape is not None)  # the contexts used are said


def test_check_draws_contexts_from_the_data_and_the_cli_passes(tmp_path):
    from typer.testing import CliRunner

    from flowspec.check import check_flow
    from flowspec_cli.main import app

    rng = np.random.default_rng(0)
    table = np.stack([rng.normal(size=50), rng.normal(size=50), rng.normal(150, 30, 50)], 1)
    path = write_table(tmp_path / "c.csv", table, columns=["a", "b", "target"])
    (tmp_path / "c.yaml").write_text(_conditional_spec(path))
    notes = []
    check_flow(flowspec.load(tmp_path / "c.yaml"), jitter=0.1, notes=notes)
    assert notes == ["checked at the first 8 contexts of the training data"]
    spec = str(SPECS[0].parent / "conditional_simulator.yaml")
    result = CliRunner().invoke(app, ["check", spec, "--quick"])
    assert result.exit_code == 0, result.output
    assert "nodes pass" in result.output


# -- scoring new rows -----------------------------------------------------------------------------
def test_score_new_rows_with_the_runs_columns(tmp_path):
    from flowspec.data.score import score_rows

    path = _people(tmp_path)
    result = train(load_spec(_spec(path, columns=("height_cm", "weight_kg"))),
                   out=tmp_path / "runs", reporter=Recorder())
    flow = flowspec.load(result.run_dir)
    new = tmp_path / "new.csv"  # other column order, an extra text column, one odd row
    new.write_text("note,weight_kg,height_cm\nok,70,175\nodd,300,120\nok,60,165\n")
    logp, rows = score_rows(flow, new)
    assert logp.shape == (3,) and logp.dtype == torch.float64
    assert torch.equal(rows.x[0], torch.tensor([175.0, 70.0]))  # the run's column order
    expected = flow.log_prob(rows.x).double()
    assert torch.allclose(logp, expected)
    assert logp[1] < logp[0] - 10 and logp[1] < logp[2] - 10  # the anomaly scores lowest
    bad = tmp_path / "bad.csv"
    bad.write_text("height_cm,mass\n170,60\n")
    with pytest.raises(DataError, match="no column 'weight_kg'"):
        score_rows(flow, bad)


def test_a_table_of_other_width_suggests_the_specs_own_variable(tmp_path):
    from flowspec.data.files import load_spec_on_file

    path = _people(tmp_path)  # 4 columns; spline_tabular's input is [${D}] with D: 2
    spec = load_spec_on_file(SPECS[0].parent / "spline_tabular.yaml", path,
                             ["train.steps=1", "train.batch_size=16"])
    with pytest.raises(DataError) as info:
        train(spec, out=tmp_path / "runs", reporter=Recorder())
    assert "--set vars.D=4" in _message(info.value)


def test_a_spec_pointed_at_another_file_says_every_problem_at_once(tmp_path):
    from flowspec.data.files import load_spec_on_file

    x = np.random.default_rng(0).normal(size=(40, 4))
    path = write_table(tmp_path / "sim.csv", x, columns=["x1", "x2", "t1", "t2"])
    spec = load_spec_on_file(SPECS[0].parent / "conditional_simulator.yaml", path,
                             ["train.steps=1"])  # keeps array: x, context: theta
    with pytest.raises(DataError) as info:
        train(spec, out=tmp_path / "runs", reporter=Recorder())
    msg = _message(info.value)
    assert len(info.value.problems) == 3, msg
    assert "`array` names an array" in msg and "array=null" in msg
    assert "no column 'theta' in the header" in msg
    assert "the model takes examples of shape [2] and a context of shape [2]" in msg
    assert "x1, x2, t1, t2" in msg


def test_samples_of_dequantized_columns_are_written_on_their_values(tmp_path):
    from flowspec.data.export import write_samples

    path = write_table(tmp_path / "t.csv", _table(), columns=["height", "sex", "visits"])
    result = train(load_spec(_spec(path, preprocess="[dequantize]")), out=tmp_path / "r",
                   reporter=Recorder())
    flow = flowspec.load(result.run_dir)
    out = write_samples(flow, tmp_path / "s.csv", 200)
    rows = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.array_equal(rows[:, 2], np.round(rows[:, 2]))  # visits: counts again
    assert np.array_equal(rows[:, 1], np.round(rows[:, 1]))  # sex: 1/2 (or a neighbour)
    assert not np.array_equal(rows[:, 0], np.round(rows[:, 0]))  # height stays continuous


def test_support_by_column_name_with_data_and_no_columns_list(tmp_path):
    from flowspec.data.files import load_spec_on_file

    path = _support_table(tmp_path)  # height, weight, score
    spec = load_spec_on_file(SPECS[0].parent / "spline_tabular.yaml", path,
                             ["vars.D=3", "data.dataset.file.support={weight: positive}"])
    node = next(n for n in spec.graph.nodes if n.type == "support")
    assert node.params == {"low": [None, 0.0, None], "high": [None, None, None]}
