"""ActNorm's data-dependent initialisation and a plain ActNorm layer for nets.

Shared by the ``actnorm`` node (which adds the log-det) and the conditioner nets that
normalise with ActNorm (Glow's CNN); it lives here because nets never import nodes.
"""

from __future__ import annotations

import torch
from torch import nn

#: channels whose initial std is below this keep unit scale (a constant channel
#: would otherwise get a huge scale that blows up the next batch).
MIN_STD = 1e-6


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) variance of ``x`` over batch and positions.

    Under ``torch.distributed`` the sums are all-reduced, so every replica
    initialises from the statistics of the global batch and stays in sync.
    """
    xt = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    count = torch.tensor(float(xt.shape[1]), dtype=torch.float64, device=x.device)
    sums = torch.stack([xt.sum(1), (xt * xt).sum(1)])
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(count)
    mean = sums[0] / count
    var = (sums[1] / count - mean * mean).clamp_min(0.0)
    return mean, var


def initial_bias_and_log_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(bias, log_scale)`` with which ``(x + bias) * exp(log_scale)`` has zero
    mean and unit variance per channel (unit scale for constant channels)."""
    mean, var = channel_stats(x)
    std = var.sqrt()
    log_scale = torch.where(std > MIN_STD, -torch.log(std.clamp_min(MIN_STD)),
                            torch.zeros_like(std))
    return -mean, log_scale


class ActNormState:
    """What both ActNorms share (mixed into an ``nn.Module``): per-channel ``bias`` and
    ``log_scale`` parameters, the ``initialized`` buffer saved in checkpoints (a loaded
    model never re-initialises), and the initialisation from the first training batch."""

    def _setup_actnorm(self, view: tuple[int, ...]) -> None:
        self.bias = nn.Parameter(torch.zeros(view))
        self.log_scale = nn.Parameter(torch.zeros(view))
        self.register_buffer("initialized", torch.tensor(False))
        # Python-side mirror of `initialized`: avoids a device sync every training step.
        self._init_checked = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and scale so that ``x`` maps to zero mean, unit variance per channel."""
        bias, log_scale = initial_bias_and_log_scale(x)
        self.bias.copy_(bias.reshape(self.bias.shape).to(self.bias.dtype))
        self.log_scale.copy_(log_scale.reshape(self.log_scale.shape).to(self.log_scale.dtype))
        self.initialized.fill_(True)

    def _load_from_state_dict(self, *args, **kwargs):
        self._init_checked = False
        super()._load_from_state_dict(*args, **kwargs)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x + bias) * exp(log_scale)``, initialising on the first training batch."""
        if self.training and not self._init_checked:
            if not bool(self.initialized):
                self.initialize(x)
            self._init_checked = True
        return (x + self.bias) * torch.exp(self.log_scale)


class ActNormLayer(ActNormState, nn.Module):
    """``(x + bias) * exp(log_scale)`` per channel, initialised from the first training
    batch: ActNorm as a normalisation layer inside a net (no log-det)."""

    def __init__(self, channels: int, spatial: tuple[int, ...] = ()):
        super().__init__()
        self._setup_actnorm((channels,) + (1,) * len(spatial))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)
