"""Mixed precision: bf16 autocast trains without NaN, and the numerically sensitive parts
(log-dets, spline bin search, priors) stay fp32, so log p(x) stays close to fp32's."""

from __future__ import annotations

import json

import pytest
import torch

from flowspec.api import build_flow
from flowspec.errors import FlowspecError
from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.precision import Precision, resolve_precision
from flowspec.train.report import PlainReporter, SilentReporter

GLOW = """
name: glow_bf16
data: {dataset: mnist, preprocess: [{pad: {to: [32, 32]}}, {dequantize: uniform}]}
model:
  input: [1, 32, 32]
  prior: diag_gaussian
  flow:
    - squeeze
    - repeat: 2
      body:
        - actnorm
        - inv_conv1x1: {lu: true}
        - affine_coupling: {mask: channel, scale: sigmoid, net: {glow_cnn: {width: 16}}}
    - factor_out: {prior: conditional_gaussian}
    - squeeze
    - actnorm
    - inv_conv1x1: {lu: false}
    - affine_coupling: {mask: channel, scale: sigmoid, net: {glow_cnn: {width: 16}}}
train: {batch_size: 8, steps: 12, log_every: 1, eval_every: 0, sample_every: 0,
        precision: bf16}
"""

SPLINE = """
name: spline_bf16
data: {dataset: {moons: {n_train: 512, n_test: 128}}}
model:
  input: [2]
  flow:
    - repeat: 3
      as: i
      body:
        - rq_spline_coupling: {parity: "${i}", bins: 8, net: {mlp: {hidden: [32, 32]}}}
train: {batch_size: 64, steps: 30, log_every: 1, eval_every: 0, sample_every: 0,
        precision: bf16, optimizer: {adam: {lr: 0.005}}}
"""


@pytest.fixture
def mnist_dir(tmp_path):
    from fakedata import write_mnist

    write_mnist(tmp_path / "mnist", n_train=64, n_test=16)
    return tmp_path


def _train_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


@pytest.mark.parametrize("text", [GLOW, SPLINE], ids=["glow", "spline"])
def test_bf16_training_on_cpu_stays_finite_and_learns(text, mnist_dir, tmp_path):
    result = train(load_spec(text), out=tmp_path / "runs", device="cpu",
                   data_dir=mnist_dir, reporter=SilentReporter())
    rows = _train_rows(result.run_dir)
    assert len(rows) == result.step  # no step was skipped as non-finite
    losses = [r["loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < losses[0]
    for p in result.flow.parameters():  # weights stay fp32 (autocast only casts activations)
        assert p.dtype == torch.float32 and torch.isfinite(p).all()


def _initialised(text, x):
    torch.manual_seed(0)
    flow = build_flow(load_spec(text)).train()
    with torch.no_grad():
        flow.log_prob(x)  # actnorm's data-dependent init
        for p in flow.parameters():  # move off the zero-initialised identity maps
            p.add_(0.05 * torch.randn_like(p))
    return flow.eval()


@pytest.mark.parametrize("text,shape", [(GLOW, (16, 1, 32, 32)), (SPLINE, (256, 2))],
                         ids=["glow", "spline"])
def test_log_prob_under_bf16_autocast_matches_fp32(text, shape):
    """Stated tolerance: |Δ log p(x)| <= 0.01 nats per dimension, |Δ log-det| likewise.

    Only the conditioner nets run in bf16 (3 significant digits); the log-det sum, the
    coupling maps, the spline and the priors run in fp32 on their (rounded) outputs.
    """
    torch.manual_seed(1)
    x = torch.rand(shape) if len(shape) == 4 else 1.5 * torch.randn(shape)
    flow = _initialised(text, x)
    dims = flow.num_dims
    with torch.no_grad():
        lp32 = flow.log_prob(x)
        _, ld32 = flow.forward(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp16 = flow.log_prob(x)
            _, ld16 = flow.forward(x)
    assert lp16.dtype == ld16.dtype == torch.float32  # accumulated in fp32
    assert ((lp16 - lp32).abs() / dims).max() < 0.01
    assert ((ld16 - ld32).abs() / dims).max() < 0.01
    # and the difference is a rounding difference, not a lost term
    assert torch.corrcoef(torch.stack([lp16, lp32]))[0, 1] > 0.99


def test_fp32_islands_are_exact_under_autocast():
    """Given fp32 inputs, the islands compute exactly what they compute without autocast."""
    from flowspec.bijectors.spline import rq_spline
    from flowspec.distributions import PRIORS

    torch.manual_seed(0)
    x = 2 * torch.randn(64, 3)
    w, h, d = torch.randn(64, 3, 6), torch.randn(64, 3, 6), torch.randn(64, 3, 5)
    ref = rq_spline(x, w, h, d, 3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rq_spline(x, w, h, d, 3.0)
    assert all(torch.equal(a, b) for a, b in zip(ref, got))

    prior = PRIORS.build("standard_normal", (3,))
    z = torch.randn(8, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flow_lp = build_flow(load_spec("model: {input: [3], flow: [actnorm]}\n")).eval()
        lp = flow_lp._latent_log_prob({flow_lp._lat[0][2]: z}, None)
    assert lp.dtype == torch.float32
    assert torch.equal(lp, prior.log_prob(z.float()))


def test_fp16_is_refused_on_cpu_and_amp_is_deprecated():
    with pytest.raises(FlowspecError, match="fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))
    said: list[str] = []
    assert resolve_precision({"precision": "fp32", "amp": True}, said.append) == "bf16"
    assert "deprecated" in said[0] and "precision: bf16" in said[0]
    assert resolve_precision({"precision": "fp32", "amp": None}, said.append) == "fp32"
    with pytest.raises(FlowspecError, match="contradicts"):
        resolve_precision({"precision": "fp16", "amp": True})


def test_deprecated_amp_key_trains_as_bf16_with_a_warning(tmp_path):
    text = SPLINE.replace("precision: bf16", "amp: true").replace("steps: 30", "steps: 2")
    said: list[str] = []
    train(load_spec(text), out=tmp_path, device="cpu", reporter=PlainReporter(said.append))
    assert any("train.amp is deprecated" in line for line in said)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_fp16_with_grad_scaler_on_cuda(tmp_path):
    result = train(load_spec(SPLINE.replace("bf16", "fp16")), out=tmp_path, device="cuda",
                   reporter=SilentReporter())
    assert all(torch.isfinite(torch.tensor([r["loss"] for r in _train_rows(result.run_dir)])))
