"""The two programs an exported flow consists of, as plain ``nn.Module`` s.

Exporters trace a module's ``forward`` with tensor inputs only; these wrappers give
them exactly the public signatures of the artifact:

* ``log_prob(x[, context]) -> [batch]`` -- the flow's own forward walk and priors;
* ``sample(noise[, context]) -> x`` -- ``noise`` is ``[batch, D]`` standard draws of
  the priors' base noise (D = the data's size), cut into one tensor per latent in
  the order the latents are declared; multiplying it by T samples at temperature T.

``context`` is what the flow's nodes read before any embedding: one-hot rows for
class-conditional flows (``Flow.context_shape``), the context tensor otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from flowspec.compile import Flow


class LogProbProgram(nn.Module):
    """``log p(x[, context])`` of a flow, per example."""

    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.log_prob(x, context)


class SampleProgram(nn.Module):
    """``x = sample(noise[, context])``: the flow's inverse walk from given base noise."""

    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow

    def forward(self, noise: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.sample_from_noise(self.flow.unflatten_latents(noise), context=context)


PROGRAMS: dict[str, type[nn.Module]] = {"log_prob": LogProbProgram, "sample": SampleProgram}
