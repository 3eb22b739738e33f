"""Shared fixtures: a tiny 2-D spec that trains in a second, and small thread counts."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

TINY_SPEC = """\
name: tiny
data:
  dataset: {moons: {n_train: 512, n_test: 256}}
model:
  input: [2]
  flow:
    - repeat: 2
      as: i
      body:
        - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [16]}}}
train:
  batch_size: 64
  steps: 12
  log_every: 4
  checkpoint_every: 4
  ema: 0.9
  optimizer: {adam: {lr: 0.01}}
sample: {n: 128}
"""


@pytest.fixture
def tiny_spec_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path
