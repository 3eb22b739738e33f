"""TarFlow's options: noise augmentation of training batches, score-based denoising."""

from __future__ import annotations

import pytest
import torch

import flowspec
from flowspec.api import build_flow
from flowspec.denoise import denoise_sigma, score_denoise
from flowspec.errors import SpecError
from flowspec.objectives import build_objective
from flowspec.sampling import denoised_sample
from flowspec.spec import load_spec

SPEC = """
flowspec: 1
name: noisy_moons
data: {dataset: moons}
model:
  input: [2]
  flow:
    - affine: {scale: 2.0, shift: 0.5}
train:
  batch_size: 4096
  steps: 1
  objective: {maximum_likelihood: {noise: 0.3}}
sample: {n: 8, denoise: true}
"""


def test_training_batches_get_noise_of_sigma_and_evaluation_stays_clean():
    spec = load_spec(SPEC)
    flow = build_flow(spec)
    objective = build_objective(spec, flow)
    assert objective.noise == 0.3
    seen: list[torch.Tensor] = []
    real = flow.log_prob
    flow.log_prob = lambda x, context=None: (seen.append(x), real(x, context))[1]
    torch.manual_seed(0)
    objective.loss(flow, step=0, seed=0)
    noisy = seen.pop()
    clean, _ = objective.batch(flow, step=0, seed=0)
    std = float((noisy - clean).std())
    assert abs(std - 0.3) < 0.02, std
    objective.evaluate(flow, "test", max_batches=1)
    x_eval = seen.pop()
    assert torch.equal(x_eval, objective.split("test").x[:x_eval.shape[0]].float())
    assert any("noise augmentation" in note for note in objective.start_warnings())


def test_denoising_is_tweedies_step_on_a_gaussian():
    # affine scale 2, shift 0.5 maps x to z = 2x + 0.5 ~ N(0, 1): x ~ N(m, s²) with
    # m = -0.25, s² = 1/4, whose score is -(x - m)/s², so the step is exact and known
    flow = flowspec.load(SPEC)
    x = torch.randn(16, 2, dtype=torch.float32)
    sigma, s2, m = 0.3, 0.25, -0.25
    out = score_denoise(flow, x, sigma)
    assert torch.allclose(out, x - sigma ** 2 * (x - m) / s2, atol=1e-5)
    assert denoise_sigma(flow.spec) == pytest.approx(0.3)
    torch.manual_seed(1)
    plain = flow.sample(8)
    torch.manual_seed(1)
    with torch.no_grad():  # pictures are drawn without autograd; the step takes its own
        den = denoised_sample(flow, 8, temperature=1.0, context=None)
    assert torch.allclose(den, plain - sigma ** 2 * (plain - m) / s2, atol=1e-5)


def test_denoise_without_training_noise_is_refused():
    with pytest.raises(SpecError, match="trained without any"):
        load_spec(SPEC.replace("objective: {maximum_likelihood: {noise: 0.3}}",
                               "objective: maximum_likelihood"))
    no_denoise = load_spec(SPEC.replace("denoise: true", "denoise: false"))
    assert denoise_sigma(no_denoise) is None
