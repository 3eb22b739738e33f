"""``train.compile``: torch.compile the training step, never at the cost of the run.

torch.compile traces the flow's graph walk into fused kernels (inductor: C++ on
CPU, Triton on CUDA). Compilation happens lazily at the first call and can fail
for reasons outside the spec -- no C++ compiler, an unsupported Python, an
inductor bug. :class:`CompiledOrEager` then says so once and continues eagerly
with the same module, so a run never crashes because it asked to be faster.

Calls run eagerly until the flow's data-dependent initialisation (ActNorm: an
``initialized`` buffer) has happened: tracing the first batch's one-off init would
only break the graph into pieces and compile them twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from flowspec.errors import FlowspecError


class CompiledOrEager:
    """Calls the compiled module; on a compilation failure, the eager one from then on.

    A genuine error (a wrong shape, a user error) is not hidden: the eager retry of
    the same call raises it again.
    """

    def __init__(self, module: nn.Module, say: Callable[[str], None], backend: Any = "inductor"):
        self.module = module
        self.say = say
        self.compiled: Callable[..., Any] | None = None
        #: the first compiled call compiles (a minute on CPU, silent otherwise): said once
        self._compiled_once = False
        self._flags = [b for name, b in module.named_buffers()
                       if name.rsplit(".", 1)[-1] == "initialized"]
        try:
            import torch

            # inductor's own deprecation notice, printed at every compile: not the user's
            warnings.filterwarnings("ignore", message=r".*torch\._prims_common\.check.*")
            self.compiled = torch.compile(module, backend=backend)
        except Exception as err:  # noqa: BLE001 -- any platform limitation means eager
            self._fall_back(err)

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def _initialising(self) -> bool:
        """Some data-dependent init is still to come (checked until it has happened)."""
        if self._flags and not all(bool(f) for f in self._flags):
            return True
        self._flags = []
        return False

    def _fall_back(self, err: BaseException) -> None:
        self.compiled = None
        root = err  # the compiler wraps the real reason (e.g. a missing C++ compiler)
        while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
            root = inner
        first = (str(root).strip().splitlines() or [""])[0][:300]
        self.say(f"train.compile: torch.compile is unavailable here ({type(root).__name__}: "
                 f"{first}); training continues eagerly (same results, no speed-up)")

    def _first_call(self, *args: Any) -> Any:
        """The call that compiles, said before and after (it takes tens of seconds)."""
        import time

        self.say("train.compile: compiling the training step with torch.compile (the "
                 "first compiled step takes up to a minute or two)")
        t0 = time.perf_counter()
        out = self.compiled(*args)  # type: ignore[misc]
        self._compiled_once = True
        self.say(f"train.compile: compiled in {time.perf_counter() - t0:.0f} s")
        return out

    def __call__(self, *args: Any) -> Any:
        if self.compiled is None or self._initialising():
            return self.module(*args)
        try:
            if self._compiled_once:
                return self.compiled(*args)
            return self._first_call(*args)
        except FlowspecError:
            raise
        except Exception as err:  # noqa: BLE001 -- compiler failures have many types
            self._fall_back(err)
            return self.module(*args)
