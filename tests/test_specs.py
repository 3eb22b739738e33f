"""Every shipped spec: validates at full size, and trains, checkpoints and samples
at its `quick` size on small files of its dataset's real format."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fakedata import write_cifar, write_image_folder, write_mnist, write_spec_files

import flowspec
from flowspec.objectives import objective_class
from flowspec.spec import load_spec
from flowspec.train.loop import train
from flowspec.train.report import SilentReporter

SPECS = sorted((Path(__file__).parent.parent / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_mnist(d / "mnist", n_train=64, n_test=16)
    write_cifar(d / "cifar-10-batches-py")
    write_image_folder(d / "celeba" / "img_align_celeba", n=24, size=(160, 160))  # > crop 148
    write_spec_files(d, SPECS)  # specs reading your own files (the `file` dataset)
    return d


def test_specs_are_shipped():
    names = {p.stem for p in SPECS}
    for required in ("nice_mnist", "nice_two_gaussians", "realnvp_moons", "realnvp_mnist",
                     "realnvp_cifar10", "glow_mnist", "glow_cifar10", "glow_celeba",
                     "glow_mnist_conditional", "planar_u1", "planar_u2", "planar_u3",
                     "planar_u4", "radial_u1", "bnaf_moons", "bnaf_checkerboard",
                     "bnaf_8gaussians"):
        assert required in names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_validates_at_full_size(path):
    spec = load_spec(path)
    assert spec.name == path.stem, "a spec's name should match its file name"
    assert spec.quick, "every shipped spec carries `quick` overrides for smoke runs"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_trains_quick(path, data_dir, tmp_path):
    spec = load_spec(path, ["train.steps=2", "train.eval_batches=1"], quick=True)
    objective = objective_class(spec)
    if objective.uses_data:
        n = 8 if "cifar" in path.stem or "celeba" in path.stem else 16
        spec = load_spec(path, ["train.steps=2", "train.eval_batches=1",
                                f"train.batch_size={min(spec.train['batch_size'], n)}"],
                         quick=True)
    torch.manual_seed(0)
    result = train(spec, out_root=tmp_path, data_dir=data_dir, reporter=SilentReporter())
    assert result.step == 2
    flow = flowspec.load(result.run_dir)
    labels = torch.arange(2) % flow.num_classes if flow.num_classes else None
    if labels is None and flow.context_shape is not None:  # a context vector
        labels = torch.zeros(flow.context_shape)
    x = flow.sample(2, context=labels)
    assert x.shape == (2, *flow.input_shape) and torch.isfinite(x).all()
    assert math.isfinite(result.metrics[objective.key_metric])
