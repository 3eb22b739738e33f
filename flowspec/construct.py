"""Constructing a flow's nodes and priors: located errors and a memory budget.

A spec that validates can still ask for something that cannot be built: an MLP
with 2**32 hidden units, a prior over a huge input. Without care that is a torch
traceback, or worse, gigabytes allocated and initialised before anything fails.
:class:`Construction` builds every node and prior of a flow

* under an allocation budget: tensor factories (``torch.empty``, ``zeros``,
  ``randn`` ...) are counted *before* they allocate, and the build stops with a
  located :class:`~flowspec.errors.SpecError` once the flow would exceed
  :func:`flow_budget` numbers, or one node would create more than
  :data:`MAX_NODE_TENSORS` tensors (``layers: 100000`` builds for minutes);
* turning whatever torch raises while building (``RuntimeError``,
  ``ValueError``, ``OverflowError``, ``MemoryError`` ...) into a
  :class:`~flowspec.errors.SpecError` naming the node and its line;
* refusing initial parameters that are not finite (``init_scale: 1e300``):
  :meth:`Construction.check_finite`, once all are built.

Nothing here runs in a forward or inverse walk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from flowspec.bijectors import NODES
from flowspec.distributions import PRIORS
from flowspec.errors import FlowspecError, Problem, SpecError
from flowspec.graph import LatentIR, NodeIR

#: at most this many numbers (4 GiB of float32) in one flow's parameters, buffers
#: and construction temporaries; on machines with less than 16 GiB of memory, a
#: quarter of the memory.
MAX_FLOW_NUMBERS = 2**30


#: tensors one node or prior may create while it is built (a resnet of 8 blocks: ~50).
MAX_NODE_TENSORS = 10_000


def flow_budget() -> int:
    """Numbers a flow may allocate while it is built (see :data:`MAX_FLOW_NUMBERS`)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return MAX_FLOW_NUMBERS
    return min(MAX_FLOW_NUMBERS, memory // 16)  # 4-byte numbers in a quarter of it


def _prod(dims: Any) -> int | None:
    if isinstance(dims, int):
        return max(dims, 0)
    if isinstance(dims, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in dims):
        return math.prod(max(d, 0) for d in dims)
    return None


def _size_arg(args: tuple, kwargs: dict, start: int = 0) -> int | None:
    """Elements of a ``size`` given as ``f(2, 3)``, ``f((2, 3))`` or ``f(size=(2, 3))``."""
    if "size" in kwargs:
        return _prod(kwargs["size"])
    rest = args[start:]
    if len(rest) == 1:
        return _prod(rest[0])
    return _prod(tuple(rest)) if rest else None


def _arange(args: tuple, kwargs: dict) -> int | None:
    nums = [a for a in args if isinstance(a, (int, float))]
    start, end, step = (0, nums[0], 1) if len(nums) == 1 else (*nums[:2], nums[2] if
                                                               len(nums) > 2 else 1)
    start, end = kwargs.get("start", start), kwargs.get("end", end)
    step = kwargs.get("step", step)
    try:
        return max(math.ceil((end - start) / step), 0)
    except (TypeError, ZeroDivisionError, OverflowError, ValueError):
        return None


def _eye(args: tuple, kwargs: dict) -> int | None:
    n = args[0] if args else kwargs.get("n")
    m = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("m", n)
    rows, cols = _prod(n), _prod(m)
    return rows * cols if rows is not None and cols is not None else None


_COUNTERS: dict[Any, Callable[[tuple, dict], int | None]] = {
    **{f: (lambda a, k: _size_arg(a, k)) for f in (
        torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn)},
    torch.full: lambda a, k: _prod(a[0]) if a else _prod(k.get("size")),
    torch.randint: lambda a, k: _prod(k["size"]) if "size" in k else (
        _prod(a[-1]) if a else None),
    torch.randperm: lambda a, k: _prod(a[0]) if a else None,
    torch.arange: _arange,
    torch.eye: lambda a, k: _eye(a, k),
    torch.linspace: lambda a, k: _prod(a[2]) if len(a) > 2 else _prod(k.get("steps")),
    torch.logspace: lambda a, k: _prod(a[2]) if len(a) > 2 else _prod(k.get("steps")),
    **{f: (lambda a, k: _size_arg(a, k, 1)) for f in (
        torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones)},
    torch.Tensor.new_full: lambda a, k: _prod(a[1]) if len(a) > 1 else None,
    torch.Tensor.repeat: lambda a, k: (a[0].numel() * (_size_arg(a, k, 1) or 0)
                                       if a and isinstance(a[0], torch.Tensor) else None),
}


class _OverBudget(Exception):
    def __init__(self, numbers: int):
        self.numbers = numbers


class _TooManyTensors(Exception):
    pass


class _Budget(TorchFunctionMode):
    """Counts the numbers tensor factories are asked for, and refuses past ``limit``.

    Also counts the tensors one node creates: a structural parameter in the
    hundreds of thousands (``layers: 100000``) makes few numbers but takes
    minutes to build.
    """

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.used = 0
        self.tensors = 0  # by the node being built

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        count = _COUNTERS.get(func)
        if count is not None:
            self.tensors += 1
            if self.tensors > MAX_NODE_TENSORS:
                raise _TooManyTensors
            n = count(args, kwargs)
            if n is not None:
                if self.used + n > self.limit:
                    raise _OverBudget(n)
                self.used += n
        return func(*args, **kwargs)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _gb(numbers: int) -> str:
    return f"{numbers * 4 / 1e9:,.1f} GB"


class Construction:
    """Builds the nodes and priors of one flow, all under one allocation budget."""

    def __init__(self, limit: int | None = None):
        self.budget = _Budget(flow_budget() if limit is None else limit)
        self.built: list[tuple[NodeIR | LatentIR, str, nn.Module]] = []

    def node(self, node: NodeIR, in_shape: Any, context_shape: Any) -> nn.Module:
        return self._build(node, f"node '{node.type}' ({node.id})", lambda: NODES.build(
            {node.type: node.params}, in_shape, context_shape=context_shape))

    def prior(self, lat: LatentIR, in_shape: Any, context_shape: Any,
              cond_shape: Any) -> nn.Module:
        return self._build(lat, f"prior '{lat.prior}' ({lat.id})", lambda: PRIORS.build(
            {lat.prior: lat.params}, in_shape, context_shape=context_shape,
            cond_shape=cond_shape))

    def _build(self, item: NodeIR | LatentIR, what: str,
               make: Callable[[], nn.Module]) -> nn.Module:
        self.budget.tensors = 0
        try:
            with self.budget:
                module = make()
        except FlowspecError:
            raise
        except _TooManyTensors:
            raise SpecError(Problem(
                f"building {what} creates more than {MAX_NODE_TENSORS:,} tensors", item.path,
                item.loc, "a count of layers, blocks or bins is too large")) from None
        except _OverBudget as over:
            limit = self.budget.limit
            raise SpecError(Problem(
                f"building {what} would allocate {over.numbers:,} more numbers "
                f"({_gb(over.numbers)}); a flow may allocate at most {limit:,} "
                f"({_gb(limit)}) while it is built", item.path, item.loc,
                "make it smaller: hidden sizes, widths, the input shape")) from None
        except (RuntimeError, ValueError, ArithmeticError, MemoryError, TypeError,
                IndexError) as err:
            raise SpecError(Problem(
                f"cannot build {what}: {type(err).__name__}: {_first_line(err)}", item.path,
                item.loc, "check its parameters against `flowspec nodes`")) from err
        self.built.append((item, what, module))
        return module

    def check_finite(self) -> None:
        """Refuse non-finite initial parameters (one batched check; per node only on failure)."""
        params = [p for _, _, m in self.built for p in m.parameters()
                  if p.is_floating_point() and not _lazy(p) and p.numel()]
        if not params:
            return
        peaks = torch._foreach_norm(params, float("inf"))  # max |value|: cannot overflow
        if bool(torch.isfinite(torch.stack([p.float().cpu() for p in peaks])).all()):
            return
        checked = {id(p) for p in params}
        for item, what, module in self.built:
            for name, p in module.named_parameters():
                if id(p) in checked and not bool(torch.isfinite(p).all()):
                    raise SpecError(Problem(
                        f"building {what} gave non-finite initial values in '{name}'",
                        item.path, item.loc, "an initial scale or value is too large"))


def _lazy(p: torch.Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter) or p.device.type == "meta"
