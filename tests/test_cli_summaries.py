"""What the CLI's summaries say: which checkpoint a number belongs to (best vs last), how a
sweep ranks, what `runs` shows for runs without a best and on other data (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowspec.train.session import SweepRow, rank_rows
from flowspec_cli.main import app

runner = CliRunner()
FAST = ["--set", "train.sample_every=0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_final_lines_say_which_checkpoint(tiny_spec_path, tmp_path):
    r = invoke("train", tiny_spec_path, "--out", tmp_path / "runs", *FAST)
    assert r.exit_code == 0, r.output
    assert "final:" not in r.stdout
    assert "last checkpoint (step 12, val): " in r.stdout
    assert "best checkpoint (step " in r.stdout and "used by flowspec eval" in r.stdout
    r = invoke("train", tiny_spec_path, "--out", tmp_path / "runs", "--set",
               "data.val_fraction=0", *FAST)
    assert r.exit_code == 0, r.output
    assert "last checkpoint (step 12, test): " in r.stdout
    assert "no best checkpoint" in r.stdout


def test_sweep_ranks_by_the_checkpoint_eval_uses():
    overfit = SweepRow("lr=big", Path("a"), "finished", 1.0, "nll_nats", best=-3.0,
                       best_step=10, best_split="val", test_at_best=-2.9, test_at_last=9.0)
    steady = SweepRow("lr=small", Path("b"), "finished", 1.0, "nll_nats", best=-1.0,
                      best_step=90, best_split="val", test_at_best=-0.9, test_at_last=-1.0)
    nobest = SweepRow("diverged", Path("c"), "diverged", 1.0, "nll_nats", test_at_last=-9.0)
    assert [r.label for r in rank_rows([steady, nobest, overfit])] == \
        ["lr=big", "lr=small", "diverged"]


def test_sweep_table_names_best_and_last(tiny_spec_path, tmp_path):
    out = tmp_path / "runs"
    r = invoke("train", tiny_spec_path, "--out", out, "--sweep", "train.steps=8,12", *FAST)
    assert r.exit_code == 0, r.output
    table = r.stdout[r.stdout.index("sweep over train.steps"):]
    head = table.splitlines()[0]
    assert "ranked by best val nll_nats" in head
    assert "test nll_nats @ best" in table and "test nll_nats @ last" in table
    rows = [line for line in table.splitlines() if line.startswith("train.steps=")]
    bests = [float(line.split()[1]) for line in rows]
    assert bests == sorted(bests)


def _table_csv(path: Path, n: int = 300) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)) * [1.0, 2.0] + [0.5, -1.0]
    path.write_text("a,b\n" + "".join(f"{u:.5f},{v:.5f}\n" for u, v in x))
    return path


def test_runs_on_a_data_file_are_named_after_it(tiny_spec_path, tmp_path):
    out, data = tmp_path / "runs", _table_csv(tmp_path / "blood pressure.csv")
    r = invoke("train", tiny_spec_path, "--out", out, "--data", data, *FAST)
    assert r.exit_code == 0, r.output
    assert "run name: blood_pressure" in r.stderr
    (run,) = (out / "blood_pressure").iterdir()
    assert "name: blood_pressure" in (run / "spec.yaml").read_text()
    r = invoke("train", tiny_spec_path, "--out", out, "--data", data, "--name", "bp2", *FAST)
    assert r.exit_code == 0, r.output
    assert (out / "bp2").is_dir()
    r = invoke("train", tiny_spec_path, "--out", out, "--data", data, "--name", "x",
               "--set", "name=y")
    assert r.exit_code == 2 and "given twice" in r.output


def test_runs_and_eval_show_the_data(tiny_spec_path, tmp_path):
    out, data = tmp_path / "runs", _table_csv(tmp_path / "table.csv")
    assert invoke("train", tiny_spec_path, "--out", out, "--name", "mixed", "--set",
                  "data.val_fraction=0", *FAST).exit_code == 0
    assert invoke("train", tiny_spec_path, "--out", out, "--data", data, "--name", "mixed",
                  *FAST).exit_code == 0
    r = invoke("runs", "--out", out)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "run", "data"]
    (moons,) = [line for line in lines if " moons " in line]  # runs of one second: any order
    (table,) = [line for line in lines if " table.csv " in line]
    assert "no best" in moons and "nll_nats" in table
    assert sorted(row["data"] for row in json.loads(invoke("runs", "--out", out, "--json"
                                                           ).stdout)) == ["moons", "table.csv"]
    r = invoke("eval", out / "mixed")
    assert r.exit_code == 0, r.output
    chosen, other = (("table.csv", "moons") if "on table.csv" in r.stderr else
                     ("moons", "table.csv"))
    assert f"on {chosen}" in r.stderr and f"runs on other data ({other})" in r.stderr


def test_eval_scores_every_row_of_a_new_file(tiny_spec_path, tmp_path):
    out, data = tmp_path / "runs", _table_csv(tmp_path / "table.csv")
    assert invoke("train", tiny_spec_path, "--out", out, "--data", data, *FAST).exit_code == 0
    new = _table_csv(tmp_path / "new.csv", n=7)
    scores = tmp_path / "scores.csv"
    r = invoke("eval", out / "table", "--data", new, "--per-row", scores)
    assert r.exit_code == 0, r.output
    assert "n: 7" in r.stdout and "mean_log_prob_nats" in r.stdout
    lines = scores.read_text().splitlines()
    assert lines[0] == "row,log_prob_nats" and len(lines) == 8
    r = invoke("eval", out / "table", "--data", new, "--json")
    got = json.loads(r.stdout)
    assert got["n"] == 7 and len(got["log_prob_nats"]) == 7
    assert got["log_prob_nats"] == pytest.approx([float(ln.split(",")[1]) for ln in lines[1:]])
    assert got["checkpoint"]["which"] == "best"
    other = tmp_path / "other.csv"
    other.write_text("a,c\n1,2\n")
    r = invoke("eval", out / "table", "--data", other)
    assert r.exit_code == 2 and "Traceback" not in r.output and "b" in r.output
    r = invoke("eval", out / "table", "--per-row", scores)
    assert r.exit_code == 2 and "--data" in r.output


def test_print_spec_shows_the_run_length_in_effect(tiny_spec_path):
    from flowspec.spec import load_spec_text

    r = invoke("train", tiny_spec_path, "--print-spec")
    assert r.exit_code == 0, r.output
    assert "  steps: 12" in r.stdout and "epochs:" not in r.stdout
    assert load_spec_text(r.stdout).train["steps"] == 12
    r = invoke("train", tiny_spec_path, "--print-spec", "--set", "train.steps=null",
               "--set", "train.epochs=3")
    assert "  epochs: 3" in r.stdout and "\n  steps:" not in r.stdout
    assert load_spec_text(r.stdout).train["epochs"] == 3


def test_a_refused_resume_override_is_not_first_said_recorded(tiny_spec_path, tmp_path):
    out = tmp_path / "runs"
    assert invoke("train", tiny_spec_path, "--out", out, *FAST).exit_code == 0
    r = invoke("train", "--resume", out / "tiny", "--set", "model.input=[3]")
    assert r.exit_code == 2 and "recorded" not in r.output, r.output
    r = invoke("train", "--resume", out / "tiny", "--set", "train.steps=16")
    assert r.exit_code == 0, r.output
    assert "resume overrides: train.steps=16 (recorded in" in r.output


def test_schema_to_an_unwritable_place_is_a_message(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = invoke("schema", "-o", blocker / "schema.json")
    assert r.exit_code == 2 and "Traceback" not in r.output and "schema.json" in r.output

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    target = tmp_path / "ro" / "schema.json"
    target.parent.mkdir()
    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", refuse)
        r = runner.invoke(app, ["schema", "-o", str(target)])
    assert r.exit_code == 2 and r.exception is None or isinstance(r.exception, SystemExit)
    assert "Permission denied" in r.output or "permission" in r.output.lower()
    for _ in range(2):  # written each time, never replayed from the output cache
        target.unlink(missing_ok=True)
        assert invoke("schema", "-o", target).exit_code == 0 and target.is_file()


def test_compile_says_it_is_compiling_once():
    import torch

    from flowspec.train.torch_compile import CompiledOrEager

    said: list[str] = []
    step = CompiledOrEager(torch.nn.Linear(2, 2), said.append, backend="eager")
    for _ in range(3):
        step(torch.randn(4, 2))
    assert step.is_compiled
    assert sum("compiling the training step" in s for s in said) == 1
    assert sum("compiled in" in s for s in said) == 1


def test_untrained_sample_warns_as_the_cli(tiny_spec_path, tmp_path):
    text = tiny_spec_path.read_text().replace("  flow:\n", "  flow:\n    - standardize: {}\n")
    spec = tmp_path / "std.yaml"
    spec.write_text(text)
    r = invoke("sample", spec, "--untrained", "-o", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    assert "warning: standardize has no fitted statistics" in r.stderr
    assert "UserWarning" not in r.output and ".py:" not in r.output


def test_a_picture_that_cannot_be_drawn_is_said_once():
    from types import SimpleNamespace

    from flowspec.errors import FlowspecError
    from flowspec.train.callbacks import Drawing

    said: list[str] = []

    def draw(*args):
        raise FlowspecError("cannot draw samples of shape [7]")

    t = SimpleNamespace(cfg={"sample_every": 1}, stop_reason=None,
                        group=SimpleNamespace(is_main=True), spec=SimpleNamespace(
                            sample={"seed": 0, "n": 4, "temperature": 1.0}),
                        flow=SimpleNamespace(), steps_per_epoch=2, total=20,
                        evaluation=SimpleNamespace(last_metrics={}), run_dir=Path("."),
                        objective=SimpleNamespace(draw=draw),
                        reporter=SimpleNamespace(message=said.append),
                        with_ema=lambda fn: fn())
    drawing = Drawing()
    for epoch in range(1, 6):
        drawing.end_of_epoch(t, epoch * 2, epoch, epoch == 5)
    assert len(said) == 1 and "cannot draw samples of shape [7]" in said[0]


def test_help_paragraphs_wrap_at_the_terminal_not_the_source():
    for width in ("200", "60"):
        r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": width})
        assert r.exit_code == 0
        text = " ".join(r.output.split())  # the words in order, however rich wraps them
        assert "--compile: train.compile=true, --data FILE: data.dataset reads FILE" in text
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    line = next(ln for ln in r.output.splitlines() if "Every flag is sugar" in ln)
    assert "Several processes" in line  # one paragraph, one line on a wide terminal


COND_SPEC = """\
name: cond
data:
  dataset: {file: {path: nowhere.csv, context: [c]}}
model:
  input: [2]
  context: {shape: [1]}
  flow:
    - affine_coupling: {mask: half, net: {mlp: {hidden: [8]}}}
"""


def test_check_says_which_contexts_it_checked_at(tmp_path):
    spec = tmp_path / "cond.yaml"
    spec.write_text(COND_SPEC)
    r = invoke("check", spec)
    assert r.exit_code == 0, r.output
    assert "checked at 8 random N(0, 1) contexts of shape [1]" in r.stdout


def test_piped_tables_are_full_width_plain_rows(tiny_spec_path):
    r = invoke("show", tiny_spec_path)
    assert r.exit_code == 0, r.output
    row = next(line for line in r.stdout.splitlines() if line.startswith("flow."))
    assert 'net={"mlp": {"hidden": [16]}}' in row and "affine_coupling" in row
    assert not any(ch in r.stdout for ch in "│┃━")
    r = invoke("nodes")
    maf = next(line for line in r.stdout.splitlines() if line.startswith("maf "))
    assert maf.rstrip().endswith("density in one pass.")
    r = invoke("nodes", "affine_coupling")
    assert any(line.startswith("mask ") and "channel: first/second half" in line
               for line in r.stdout.splitlines())
    r = invoke("check", tiny_spec_path)
    assert r.exit_code == 0
    assert any(line.startswith("flow.") and line.rstrip().endswith("✓")
               for line in r.stdout.splitlines())
    r = invoke("show", tiny_spec_path, "--tree")
    assert any("affine_coupling" in line and 'net={"mlp": {"hidden": [16]}}' in line
               for line in r.stdout.splitlines())


def test_a_failed_fit_leaves_nothing_and_names_no_internal_path(tiny_spec_path, tmp_path,
                                                                monkeypatch):
    import tempfile

    import numpy as np

    import flowspec
    from flowspec.errors import DataError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    x = np.random.default_rng(0).normal(size=(300, 2))
    x[:, 1] = 3.0  # a constant feature: refused
    for out in (None, tmp_path / "out"):
        with pytest.raises(DataError) as caught:
            flowspec.fit(tiny_spec_path, x, out=out, verbose=False)
        text = str(caught.value)
        assert "the data array" in text and ".safetensors" not in text, text
        assert str(tmp_path) not in text
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not list((tmp_path / "out").rglob("*.safetensors"))


def test_conditional_spec_on_a_plain_table_says_everything_at_once(tmp_path):
    spec = Path(__file__).resolve().parents[1] / "specs" / "conditional_simulator.yaml"
    r = invoke("train", spec, "--data", _table_csv(tmp_path / "x.csv"), "--out", tmp_path)
    assert r.exit_code == 2
    assert "`array` names an array" in r.stderr and "no column 'theta'" in r.stderr
    assert "context of shape [2]" in r.stderr and "3 problems" in r.stderr


def test_nodes_finds_training_options():
    r = invoke("nodes", "adamw")
    assert r.exit_code == 0, r.output
    assert "adamw (optimizer)" in r.stdout and "weight_decay" in r.stdout
    for name, kind in (("ema", "train key"), ("cosine", "schedule"),
                       ("weight_decay", "optimizer parameter")):
        r = invoke("nodes", name)
        assert r.exit_code == 0 and f"{name} ({kind})" in r.stdout, r.output
    assert "Training options" in invoke("nodes").stdout
    r = invoke("nodes", "adamww")
    assert r.exit_code == 2 and "did you mean 'adamw'" in r.output


def test_a_small_table_caps_the_batch_with_a_note(tiny_spec_path, tmp_path):
    data = _table_csv(tmp_path / "small.csv", n=80)
    r = invoke("train", tiny_spec_path, "--data", data, "--out", tmp_path / "runs", *FAST)
    assert r.exit_code == 0, r.output
    assert "train.batch_size 64 is more than the training split's" in r.output
    assert "batches of" in r.output


def test_the_shipped_tabular_spec_guards_small_tables():
    from flowspec.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "specs" / "spline_tabular.yaml")
    train = spec.train
    assert train["early_stopping"]["patience"] >= 1
    name, params = next(iter(train["optimizer"].items()))
    assert name == "adamw" and params["weight_decay"] > 0


def test_trace_labels_axes_with_the_column_names(tiny_spec_path, tmp_path):
    out, data = tmp_path / "runs", _table_csv(tmp_path / "table.csv")
    assert invoke("train", tiny_spec_path, "--out", out, "--data", data, *FAST).exit_code == 0
    import flowspec
    from flowspec.sampling import data_column_names
    from flowspec.viz.trace import trace_figure

    flow = flowspec.load(out / "table")
    names = data_column_names(flow)
    assert names == ["a", "b"]
    import torch

    fig = trace_figure(flow, torch.randn(50, 2), n_samples=50, names=names)
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert "a" in labels and "b" in labels
    r = invoke("trace", out / "table", "-o", tmp_path / "t.png")
    assert r.exit_code == 0 and (tmp_path / "t.png").is_file()


def test_picture_titles_take_their_metrics_from_the_objective(tiny_spec_path):
    import flowspec
    from flowspec.viz.notes import run_title

    flow = flowspec.load(tiny_spec_path)
    flow.checkpoint_info = {"step": 5, "metrics": {"nll_nats": 1.5, "kl_nats": 9.0}}
    assert "NLL 1.5 nats" in run_title(flow)
    specs = Path(__file__).resolve().parents[1] / "specs"
    energy = flowspec.load(specs / "planar_u1.yaml")
    energy.checkpoint_info = {"step": 5, "metrics": {"nll_nats": 1.5}}
    assert run_title(energy) == f"{energy.spec.name} · step 5"  # reverse KL: its own numbers
