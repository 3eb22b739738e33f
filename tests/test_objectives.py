"""Objectives are registered like nodes: the spec schema, did-you-mean, declared metrics,
and a new objective plugs into training with one class and one registration."""

from __future__ import annotations

import json

import pytest
import torch

from flowspec.errors import SpecError
from flowspec.objectives import (
    OBJECTIVES,
    Metric,
    build_objective,
    objective_class,
    objective_params,
)
from flowspec.objectives.likelihood import MaximumLikelihood
from flowspec.registry import params_schema
from flowspec.spec import load_spec, spec_schema


def test_shipped_objectives_declare_their_interface():
    assert {"maximum_likelihood", "reverse_kl"} <= set(OBJECTIVES.names())
    for entry in OBJECTIVES:
        cls = entry.obj
        names = [m.name for m in cls.metrics]
        assert cls.key_metric in names, entry.name
        assert isinstance(cls.loss_unit, str) and cls.loss_unit
        assert all(isinstance(m, Metric) for m in cls.metrics)


def test_schema_of_train_objective_comes_from_the_registry():
    schema = spec_schema()
    train = schema["properties"]["train"]["anyOf"][0]  # (the other branch: an expression)
    assert train["properties"]["objective"]["$ref"] == "#/definitions/objective"
    text = json.dumps(schema["definitions"]["objective"])
    for name in OBJECTIVES.names():
        assert name in text


def test_unknown_objective_is_a_located_error_with_did_you_mean(tiny_spec_path):
    with pytest.raises(SpecError, match="unknown objective 'maximum_likelyhood'.*did you mean "
                                        "'maximum_likelihood'"):
        load_spec(tiny_spec_path, ["train.objective=maximum_likelyhood"])


def test_objective_requirements_are_checked_at_load(tiny_spec_path):
    with pytest.raises(SpecError, match="reverse_kl needs a target energy"):
        load_spec(tiny_spec_path, ["train.objective=reverse_kl"])


class _ScaledLikelihood(MaximumLikelihood):
    """Maximum likelihood with the loss scaled by ``factor`` (a test-only objective)."""

    def __init__(self, spec, flow, params, **kwargs):
        super().__init__(spec, flow, params, **kwargs)
        self.factor = params["factor"]

    def loss(self, flow, step, seed):
        loss, stats = super().loss(flow, step, seed)
        return loss * self.factor, {**stats, "factor": self.factor}


OBJECTIVES.register("_scaled_likelihood", schema=params_schema(
    factor={"type": "number", "exclusiveMinimum": 0, "default": 1.0}))(_ScaledLikelihood)


def test_a_new_objective_is_one_class_and_one_registration(tiny_spec_path, tmp_path):
    from flowspec.train.loop import train
    from flowspec.train.report import SilentReporter

    spec = load_spec(tiny_spec_path, ['train.objective={"_scaled_likelihood": {"factor": 0.5}}',
                                      "train.steps=4"])
    assert objective_class(spec) is _ScaledLikelihood
    assert objective_params(spec) == {"factor": 0.5}
    with pytest.raises(SpecError, match="factor"):
        load_spec(tiny_spec_path, ['train.objective={"_scaled_likelihood": {"factor": -1}}'])
    result = train(spec, out_root=tmp_path, device="cpu", reporter=SilentReporter())
    rows = [json.loads(line) for line in
            (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["factor"] == 0.5
    assert any("nll_nats" in r for r in rows if r["split"] == "test")


def test_build_objective_passes_the_objective_params(tiny_spec_path):
    from flowspec.api import build_flow

    spec = load_spec(tiny_spec_path, ['train.objective={"_scaled_likelihood": {"factor": 2}}'])
    objective = build_objective(spec, build_flow(spec), device=torch.device("cpu"))
    assert objective.factor == 2
