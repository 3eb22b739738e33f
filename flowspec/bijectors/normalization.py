"""Batch normalisation as a bijection (RealNVP, section 3.7)."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss
    depends on every rank's contribution to the sum."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def _global_stats(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over every process's batch (a differentiable all-reduce
    of per-channel sums, so gradients see the global statistics as SyncBatchNorm does)."""
    all_reduce = _SumOverRanks.apply
    xd = x.double()  # E[x^2] - E[x]^2 in float64: no cancellation at float32 rounding
    sums = all_reduce(torch.stack([xd.sum(dim=dims), (xd * xd).sum(dim=dims),
                                   xd.new_full((x.shape[1],), x.numel() // x.shape[1])]))
    mean = sums[0] / sums[2]
    var = (sums[1] / sums[2] - mean * mean).clamp_min(0.0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return mean.reshape(shape)[0].to(x.dtype), var.reshape(shape)[0].to(x.dtype)


@NODES.register(
    "batch_norm",
    schema=params_schema(
        momentum={"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                  "description": "running = (1 - momentum) * running + momentum * batch"},
        eps={"type": "number", "exclusiveMinimum": 0, "default": 1e-5,
             "description": "added to the variance"},
        sync={"type": "boolean", "default": False,
              "description": "under data parallelism, batch statistics of the global batch "
              "(all-reduced, as SyncBatchNorm) instead of each process's share"},
    ),
    category="normalization",
    examples=[{"in_shape": [3]}, {"in_shape": [2, 3, 3], "params": {"momentum": 0.5}},
              {"in_shape": [4], "params": {"sync": True}}],
    warmup=True,
)
class BatchNorm(Bijector):
    """Batch normalisation as an invertible layer (RealNVP): normalises activations per
    channel so deep flows train, with the normalisation's log-det counted.

    ``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta`` per channel
    (dim 0; per feature for vectors). In train mode mean and (biased) variance
    come from the batch, over the batch and all positions, and update the
    running averages; the log-det treats them as constants for each example, as
    RealNVP does. In eval mode -- and in the inverse, which has no batch of data
    to measure -- the running averages are used. With ``sync: true`` under data
    parallelism the batch statistics are those of the global batch (all processes),
    so N processes train exactly as one with the same global batch.
    """

    #: train-mode forward uses batch statistics the inverse cannot know (flowspec/memory.py)
    reconstruct = "keep"

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 momentum: float = 0.1, eps: float = 1e-5, sync: bool = False):
        super().__init__(tuple(in_shape), context_shape)
        self.sync = bool(sync)
        self.out_shape(in_shape)
        view = (in_shape[0],) + (1,) * (len(in_shape) - 1)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.positions = math.prod(in_shape[1:])
        self.log_gamma = nn.Parameter(torch.zeros(view))
        self.beta = nn.Parameter(torch.zeros(view))
        self.register_buffer("running_mean", torch.zeros(view))
        self.register_buffer("running_var", torch.ones(view))

    @classmethod
    def out_shape(cls, in_shape, **_):
        if not in_shape:
            raise ShapeError("batch_norm needs at least one dimension")
        return tuple(in_shape)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        dims = [0, *range(2, x.dim())]
        if self.sync and _world() > 1:
            mean, var = _global_stats(x, dims)
        else:
            mean = x.mean(dim=dims, keepdim=True)[0]
            var = x.var(dim=dims, unbiased=False, keepdim=True)[0]
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def _logdet(self, var: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        per_channel = self.log_gamma - 0.5 * torch.log(var + self.eps)
        return (per_channel.sum() * self.positions).expand(like.shape[0])

    def forward(self, x, context=None):
        mean, var = self._stats(x)
        y = (x - mean) * torch.rsqrt(var + self.eps) * torch.exp(self.log_gamma) + self.beta
        return y, self._logdet(var, x)

    def inverse(self, y, context=None):
        mean, var = self.running_mean, self.running_var
        x = (y - self.beta) * torch.exp(-self.log_gamma) * torch.sqrt(var + self.eps) + mean
        return x, -self._logdet(var, y)
