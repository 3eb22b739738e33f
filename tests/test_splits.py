"""The validation split: carved from train, seeded, disjoint; best chosen on it, not on test."""

from __future__ import annotations

import json

import pytest
import torch

from flowspec.data import open_dataset
from flowspec.data.splits import carve_indices
from flowspec.errors import DataError
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import SilentReporter


def test_carve_is_seeded_disjoint_and_complete():
    tr, va = carve_indices(100, 0.1, seed=3)
    assert len(va) == 10 and len(tr) == 90
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(100))
    tr2, va2 = carve_indices(100, 0.1, seed=3)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    assert not torch.equal(va, carve_indices(100, 0.1, seed=4)[1])
    assert len(carve_indices(5, 0.01, 0)[1]) == 1  # a nonzero fraction never gives nothing


def test_val_split_comes_out_of_train_not_test():
    data = {"dataset": {"moons": {"n_train": 200, "n_test": 50}}, "val_fraction": 0.25}
    source, _ = open_dataset(data)
    full = open_dataset({**data, "val_fraction": 0})[0].load("train")
    train_x, val_x = source.load("train").x, source.load("val").x
    assert len(train_x) == 150 and len(val_x) == 50 and len(source.load("test")) == 50
    rows = {tuple(r) for r in full.x.tolist()}
    assert {tuple(r) for r in train_x.tolist()} | {tuple(r) for r in val_x.tolist()} == rows
    assert not {tuple(r) for r in train_x.tolist()} & {tuple(r) for r in val_x.tolist()}


def test_no_validation_split_is_an_error_not_a_silent_fallback():
    source, _ = open_dataset({"dataset": "moons", "val_fraction": 0})
    assert not source.has_split("val")
    with pytest.raises(DataError, match="val_fraction"):
        source.load("val")


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_best_is_chosen_on_validation_and_test_reported_at_the_end(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path, ["train.checkpoint_every=0"])
    run = train(spec, out=tmp_path, reporter=SilentReporter()).run_dir
    rows = _rows(run)
    val = [r for r in rows if r["split"] == "val"]
    test = [r for r in rows if r["split"] == "test"]
    assert val and len(test) == 1 and test[0]["step"] == spec.train["steps"]
    best_step = min(val, key=lambda r: r["nll_nats"])["step"]
    import flowspec

    assert flowspec.load(run / "best.safetensors").checkpoint_info["step"] == best_step


def test_without_validation_no_best_is_written(tiny_spec_path, tmp_path):
    messages = []

    class Collect(SilentReporter):
        def message(self, text):
            messages.append(text)

    spec = load_spec(tiny_spec_path, ["data.val_fraction=0"])
    run = train(spec, out=tmp_path, reporter=Collect()).run_dir
    assert not (run / "best.safetensors").exists()
    assert {r["split"] for r in _rows(run)} == {"train", "test"}
    assert any("no validation split" in m for m in messages)
