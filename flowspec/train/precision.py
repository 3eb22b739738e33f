"""Mixed precision for training: ``train.precision`` -> autocast, backward and step.

* ``fp32`` -- no autocast (the default).
* ``bf16`` -- ``torch.autocast`` with bfloat16 on CPU and CUDA. bf16 has fp32's
  range, so no loss scaling is needed.
* ``fp16`` -- float16 autocast with a :class:`torch.amp.GradScaler` (fp16 underflows
  small gradients without it); CUDA only, refused on CPU.

Autocast lowers only what it lists (convolutions, matmuls: the conditioner nets);
the parts that must stay exact -- log-det accumulation, LU/slogdet log-dets, the
spline's bin search, coupling maps, priors' log-densities, logit terms -- run as
fp32 islands (:mod:`flowspec.autocast`). The deprecated ``train.amp: true`` is read
as ``precision: bf16`` with a warning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch

from flowspec.errors import FlowspecError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(cfg: dict, warn: Callable[[str], None] | None = None) -> str:
    """``train.precision``, folding in the deprecated ``train.amp``."""
    name = cfg.get("precision", "fp32")
    if cfg.get("amp"):
        if name not in ("fp32", "bf16"):
            raise FlowspecError(f"train.amp: true contradicts train.precision: {name}",
                                hint="train.amp is deprecated: remove it and keep precision")
        if warn is not None:
            warn("WARNING: train.amp is deprecated and now means train.precision: bf16 "
                 "(on CPU too; it used to be CUDA-only): write precision: bf16 instead")
        name = "bf16"
    return name


class Precision:
    """Autocast region, backward and optimiser step for one precision on one device."""

    def __init__(self, name: str, device: torch.device):
        if name not in DTYPES:
            raise FlowspecError(f"train.precision: unknown precision '{name}'",
                                hint="use fp32, bf16 or fp16")
        if name == "fp16" and device.type != "cuda":
            raise FlowspecError(
                f"train.precision: fp16 needs a CUDA device (training on {device.type})",
                hint="use precision: bf16 on CPU, or fp32")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The region the loss is computed in (backward runs outside it)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, opt: torch.optim.Optimizer, params: Iterable[torch.Tensor],
             clip: float | None) -> Any:
        """Clip (on unscaled gradients) and step; the gradient norm, or None without clip.

        With fp16 the scaler skips the step when gradients overflowed and lowers its scale.
        """
        grad_norm = None
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(opt)
            self.scaler.update()
            return grad_norm
        if clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return grad_norm

    def state_dict(self) -> dict | None:
        """The loss scale and its growth counter (fp16), so resume continues them."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
