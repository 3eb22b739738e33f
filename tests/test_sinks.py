"""Metric sinks: metrics.jsonl always, CSV per split, TensorBoard only when installed."""

from __future__ import annotations

import builtins
import csv
import json

import pytest

from flowspec.errors import FlowspecError
from flowspec.run.sinks import CsvSink, check_sinks, open_sinks
from flowspec.spec import load_spec
from flowspec.train import make_request, train
from flowspec.train.loop import Trainer
from flowspec.train.report import SilentReporter


def _csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_widens_its_header_and_appends(tmp_path):
    sink = CsvSink(tmp_path)
    sink.write("train", {"step": 1, "loss": 0.5})
    sink.write("train", {"step": 2, "loss": 0.4, "grad_norm": 3.0})
    sink.write("val", {"step": 2, "nll_nats": 1.5})
    again = CsvSink(tmp_path)  # a resumed run appends to the same files
    again.write("train", {"step": 3, "loss": 0.3, "grad_norm": 2.0})
    rows = _csv(tmp_path / "metrics" / "train.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["grad_norm"] == "" and rows[2]["grad_norm"] == "2.0"
    assert _csv(tmp_path / "metrics" / "val.csv") == [{"step": "2", "nll_nats": "1.5"}]


def test_jsonl_is_always_written(tmp_path):
    sinks = open_sinks(tmp_path, ["csv"])
    for s in sinks:
        s.write("train", {"step": 1, "loss": 0.5})
        s.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"split": "train", "step": 1,
                                                                    "loss": 0.5}


def test_training_writes_csv(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path, ["train.log=[jsonl, csv]", "train.sample_every=0"])
    run = train(spec, out=tmp_path, reporter=SilentReporter(), device="cpu").run_dir
    train_rows = _csv(run / "metrics" / "train.csv")
    assert [int(r["step"]) for r in train_rows] == [4, 8, 12]
    assert {"loss", "nll_nats", "lr", "examples_per_s"} <= set(train_rows[0])
    assert [int(r["step"]) for r in _csv(run / "metrics" / "val.csv")] == [7, 12]
    assert len(_csv(run / "metrics" / "test.csv")) == 1


def test_missing_tensorboard_is_a_clear_error_before_training(tiny_spec_path, tmp_path,
                                                             monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(FlowspecError, match="pip install tensorboard"):
        check_sinks(["tensorboard"])
    spec = load_spec(tiny_spec_path, ["train.log=[tensorboard]"])
    with pytest.raises(FlowspecError, match="tensorboard"):
        Trainer(make_request(spec, out=tmp_path, device="cpu"), reporter=SilentReporter())
    assert not (tmp_path / "tiny").exists()


def test_unknown_sink_is_refused_by_the_schema(tiny_spec_path):
    with pytest.raises(FlowspecError, match="train.log"):
        load_spec(tiny_spec_path, ["train.log=[jsonl, wandb]"])


def test_tensorboard_scalars(tiny_spec_path, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = load_spec(tiny_spec_path, ["train.log=[jsonl, tensorboard]", "train.sample_every=0"])
    run = train(spec, out=tmp_path, reporter=SilentReporter(), device="cpu").run_dir
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "val/nll_nats" in tags
    assert [e.step for e in acc.Scalars("train/loss")] == [4, 8, 12]
