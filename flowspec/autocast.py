"""fp32 islands inside mixed-precision (``torch.autocast``) regions.

Under bf16/fp16 autocast the expensive parts of a flow -- the conditioner nets'
convolutions and matmuls -- run in low precision, which is where the speed is. A
few parts must not: a log-det summed over thousands of entries in bf16 (8 bits of
mantissa) is off by whole nats, a spline's bin search on rounded knots can pick the
wrong bin, and a prior's ``-z²/2`` summed over every dimension loses the density.
:func:`run_fp32` runs such a part with autocast switched off and its low-precision
tensor arguments upcast to float32. Outside autocast it is a plain call (one cheap
check), so full-precision runs pay nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_LOW = (torch.float16, torch.bfloat16)
_NOTHING = contextlib.nullcontext()


def autocast_active(device_type: str) -> bool:
    """Whether a ``torch.autocast`` region is active for this device type."""
    return torch.is_autocast_enabled(device_type)


def upcast(t: Any) -> Any:
    """float16/bfloat16 tensors -> float32; anything else unchanged."""
    if isinstance(t, torch.Tensor) and t.dtype in _LOW:
        return t.float()
    return t


def run_fp32(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in full precision: autocast off, low-precision tensor args upcast.

    ``args`` are inspected for the device; without an active autocast region the call
    goes straight through.
    """
    device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    if not autocast_active(device_type):
        return fn(*args)
    with torch.autocast(device_type, enabled=False):
        return fn(*(upcast(a) for a in args))


def fp32_region(like: torch.Tensor) -> contextlib.AbstractContextManager:
    """A ``with`` block without autocast on ``like``'s device (a no-op outside autocast).

    For parts whose inputs are full-precision parameters (e.g. an invertible 1x1
    convolution's LU factors), so there is nothing to upcast, only autocast to leave.
    """
    device_type = like.device.type
    if not autocast_active(device_type):
        return _NOTHING
    return torch.autocast(device_type, enabled=False)
