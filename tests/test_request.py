"""The one training request: flags are --set, data files are a data.dataset override, a
resume keeps its spec; the Trainer writes nothing until it runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowspec.errors import FlowspecError
from flowspec.train import TrainRequest, make_request


def test_flags_are_overrides(tiny_spec_path, tmp_path):
    req = make_request(tiny_spec_path, overrides=["train.steps=3"], seed=7, torch_compile=True,
                       out=tmp_path)
    assert req.overrides == ("train.steps=3", "train.seed=7", "train.compile=true")
    assert req.spec.train["seed"] == 7 and req.spec.train["compile"] is True
    assert req.spec.train["steps"] == 3
    same = make_request(tiny_spec_path, overrides=list(req.overrides), out=tmp_path)
    assert same.spec.document == req.spec.document
    as_dict = make_request(tiny_spec_path, overrides={"train.steps": 3, "train.seed": 7,
                                                      "train.compile": True})
    assert as_dict.spec.train == req.spec.train


def test_data_file_is_a_dataset_override(tiny_spec_path, tmp_path):
    path = tmp_path / "d.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(50, 2)), delimiter=",",
               header="a,b", comments="")
    req = make_request(tiny_spec_path, data=path)
    assert req.overrides[0].startswith("data.dataset=")
    assert json.loads(req.overrides[0].partition("=")[2])["file"]["path"] == str(path.resolve())
    assert req.spec.data["dataset"]["file"]["path"] == str(path.resolve())


def test_resume_request_keeps_the_runs_spec(tmp_path):
    with pytest.raises(FlowspecError, match="seed"):
        make_request(resume=tmp_path, seed=3)
    with pytest.raises(FlowspecError, match="a spec"):
        make_request("x.yaml", resume=tmp_path)
    with pytest.raises(FlowspecError, match="give a spec"):
        make_request()
    with pytest.raises(FlowspecError):
        TrainRequest()


def test_sweep_points_resolve_the_same_source(tiny_spec_path):
    req = make_request(tiny_spec_path, overrides=["train.steps=3"], quick=False)
    point = req.with_overrides(["train.optimizer.adam.lr=0.5"])
    assert point.overrides == ("train.steps=3", "train.optimizer.adam.lr=0.5")
    assert point.spec.train["optimizer"] == {"adam": {"lr": 0.5}}
    assert req.spec.train["optimizer"] == {"adam": {"lr": 0.01}}


def test_building_a_trainer_writes_nothing(tiny_spec_path, tmp_path):
    from flowspec.train.loop import Trainer
    from flowspec.train.report import SilentReporter

    trainer = Trainer(make_request(tiny_spec_path, out=tmp_path / "runs", device="cpu"),
                      reporter=SilentReporter())
    assert trainer.run_dir is None and not (tmp_path / "runs").exists()
    result = trainer.run()
    assert result.run_dir.parent == tmp_path / "runs" / "tiny"
