"""Optimizer, learning-rate schedule and weight EMA from the spec's ``train`` section."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from flowspec.registry import split_named

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def build_optimizer(params: Iterable[nn.Parameter], train: dict) -> torch.optim.Optimizer:
    """The spec's optimizer. Adam/AdamW use torch's fused kernel where every parameter is
    a float tensor on CPU or CUDA: one kernel instead of a dozen per tensor (about 5x
    faster steps of the optimizer itself, a few % of a small flow's train step)."""
    name, kwargs = split_named(train["optimizer"])
    kwargs = {"lr": 1e-3, **kwargs}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    params = list(params)
    if name in ("adam", "adamw") and params and all(
            p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params):
        kwargs["fused"] = True
    return _OPTIMIZERS[name](params, **kwargs)


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then constant or cosine to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(opt: torch.optim.Optimizer, train: dict, total_steps: int):
    warmup, schedule = train["warmup_steps"], train["schedule"]
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, warmup, total_steps, schedule))


def set_base_lr(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
                lr: float) -> None:
    """Make ``lr`` the base learning rate of a resumed run from now on (the schedule's
    factor still applies): the optimizer's param groups and the scheduler's base rates
    (LambdaLR keeps its last rates privately; they are what ``get_last_lr`` logs)."""
    for group in opt.param_groups:
        group["initial_lr"] = lr
    sched.base_lrs = [lr] * len(opt.param_groups)
    factors = [fn(sched.last_epoch) for fn in sched.lr_lambdas]
    for group, factor in zip(opt.param_groups, factors):
        group["lr"] = lr * factor
    sched._last_lr = [g["lr"] for g in opt.param_groups]


class EMA:
    """Exponential moving average of floating-point weights; other buffers are copied.

    Starts from the weights after the first optimizer step, so data-dependent
    initialisation (ActNorm) is not averaged with the pre-init values, and ramps
    its decay as ``min(decay, (1 + step) / (10 + step))`` so a short run's average
    is not dominated by its first steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state: dict[str, torch.Tensor] | None = None
        self.model = model

    @torch.no_grad()
    def update(self, step: int) -> None:
        current = self.model.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
            return
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for k, v in current.items():
            if v.dtype.is_floating_point:
                self.state[k].lerp_(v.detach(), 1.0 - decay)
            else:
                self.state[k].copy_(v)

    def swap_in(self) -> dict[str, torch.Tensor] | None:
        """Load the EMA weights into the model; return the raw ones to restore later."""
        if self.state is None:
            return None
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.state)
        return raw
