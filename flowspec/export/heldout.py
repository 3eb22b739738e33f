"""The inputs an exported flow is checked on: held-out data and base noise.

The test split of the flow's own dataset (preprocessed without noise, as
evaluation sees it) when it can be read; otherwise -- a reverse-KL flow, a
dataset not on this machine -- the flow's own samples, and the note says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from flowspec.compile import Flow
from flowspec.errors import FlowspecError


@dataclass
class CheckInputs:
    """``x``/``context`` for log_prob, ``noise`` for sample, and where ``x`` came from."""

    x: torch.Tensor
    context: torch.Tensor | None
    noise: torch.Tensor
    source: str


def _context(flow: Flow, split: Any, n: int) -> torch.Tensor | None:
    if flow.context_shape is None:
        return None
    if flow.num_classes is not None and split.y is not None:
        return F.one_hot(split.y[:n].long(), flow.num_classes).float()
    if getattr(split, "context", None) is not None:
        return split.context[:n].float()
    raise FlowspecError("the test split gives no context for this conditional flow")


def _sampled_context(flow: Flow, n: int, gen: torch.Generator) -> torch.Tensor | None:
    if flow.context_shape is None:
        return None
    if flow.num_classes is not None:
        labels = torch.randint(flow.num_classes, (n,), generator=gen)
        return F.one_hot(labels, flow.num_classes).float()
    return torch.randn(n, *flow.context_shape, generator=gen)


def base_noise(flow: Flow, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, D]``: each latent's slice drawn from its prior's standard noise."""
    parts = []
    for prior, shape in zip(flow.priors.values(), flow.latent_shapes):
        eps = torch.randn(n, *shape, generator=gen)
        if prior.noise == "logistic":
            u = torch.rand(n, *shape, generator=gen).clamp(1e-6, 1 - 1e-6)
            eps = torch.log(u) - torch.log1p(-u)
        parts.append(eps.reshape(n, -1))
    return torch.cat(parts, 1)


@torch.no_grad()
def check_inputs(flow: Flow, n: int = 256, data_dir: Any = None, seed: int = 0) -> CheckInputs:
    """``n`` held-out examples (or the flow's samples) and ``n`` rows of base noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = base_noise(flow, n, gen)
    reason = "the spec trains on an energy, not data"
    if flow.spec is not None and flow.spec.data is not None:
        try:
            from flowspec.data import open_spec_dataset

            source, prep = open_spec_dataset(flow.spec, data_dir)
            split = source.load("test")
            x = prep.deterministic(split.x[:n]).float()
            return CheckInputs(x, _context(flow, split, n), noise,
                               f"{len(x)} held-out test examples")
        except FlowspecError as err:
            reason = f"no test data ({err.problems[0].message})"
    context = _sampled_context(flow, n, gen)
    x = flow.sample_from_noise(flow.unflatten_latents(noise), context=context)
    return CheckInputs(x, context, noise, f"{n} of the flow's own samples: {reason}")
