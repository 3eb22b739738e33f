"""The NaN watchdog: when a training loss is non-finite, say where it came from.

Only called on a bad step (a healthy run pays nothing): the step's loss is
recomputed once, without gradients, with :attr:`Flow.watch` set so that the
flow's own walk reports every node's input, output and log-det; the first
non-finite one, in walk order, is the culprit. Priors' log-densities are checked
the same way. Buffers that a forward pass in train mode may update (running
statistics) are restored afterwards, so the diagnosis does not change training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from flowspec.checkpoint import nonfinite_tensors
from flowspec.finite import nonfinite_rows


@dataclass
class Culprit:
    """Where the first non-finite value appeared."""

    kind: str  # "weights" | "node" | "prior" | "objective"
    name: str = ""
    what: str = ""  # "output", "log-det", "input", "log-density"
    examples: int = 0
    batch: int = 0
    loc: str | None = None

    def describe(self) -> str:
        if self.kind == "weights":
            return f"the weights were already non-finite ({self.name})"
        if self.kind == "objective":
            return ("every node's output and log-det and every prior's log-density were "
                    "finite: the non-finite value came from the objective itself")
        where = f" ({self.loc})" if self.loc else ""
        count = f" in {self.examples} of {self.batch} examples" if self.batch else ""
        if self.what == "input":
            return (f"the input of {self.kind} '{self.name}'{where} was already non-finite"
                    f"{count} (the data after preprocessing, or a latent drawn from a prior)")
        return f"the {self.what} of {self.kind} '{self.name}'{where} went non-finite first{count}"


def _bad_rows(t: Any) -> tuple[int, int]:
    """(examples with a non-finite entry, batch size) of a tensor or tuple of tensors."""
    try:
        rows = nonfinite_rows(t)
    except ValueError:
        return 0, 0
    return int(rows.sum()), rows.shape[0]


class _Watcher:
    def __init__(self, locs: dict[str, str]):
        self.locs = locs
        self.found: Culprit | None = None

    def node(self, nid: str, inp: Any, out: Any, ld: Any) -> None:
        if self.found is not None:
            return
        for what, value in (("input", inp), ("output", out), ("log-det", ld)):
            n, batch = _bad_rows(value)
            if n:
                self.found = Culprit("node", nid, what, n, batch, self.locs.get(nid))
                return

    def prior(self, lid: str, lp: Any) -> None:
        if self.found is None:
            n, batch = _bad_rows(lp)
            if n:
                self.found = Culprit("prior", lid, "log-density", n, batch, self.locs.get(lid))


def _locations(flow: Any) -> dict[str, str]:
    graph = getattr(flow, "graph", None)
    items = list(getattr(graph, "nodes", [])) + list(getattr(graph, "latents", []))
    return {item.id: str(item.loc) for item in items if getattr(item, "loc", None) is not None}


def find_nonfinite(flow: Any, compute: Callable[[], Any]) -> Culprit:
    """Run ``compute()`` (which calls the flow) once with checks; -> the first culprit."""
    bad_weights = nonfinite_tensors(dict(flow.named_parameters()))
    if bad_weights:
        shown = ", ".join(bad_weights[:3]) + (" ..." if len(bad_weights) > 3 else "")
        return Culprit("weights", shown)
    watcher = _Watcher(_locations(flow))
    buffers = {k: v.detach().clone() for k, v in flow.named_buffers()}
    wrapped = []
    for lid, prior in zip(flow.latent_names, flow.priors.values()):
        def log_prob(*args, _orig=prior.log_prob, _lid=lid, **kwargs):
            lp = _orig(*args, **kwargs)
            watcher.prior(_lid, lp)
            return lp

        prior.log_prob = log_prob  # an instance attribute shadows the method for this pass
        wrapped.append(prior)
    flow.watch = watcher.node
    try:
        with torch.no_grad():
            compute()
    finally:
        flow.watch = None
        for prior in wrapped:
            del prior.log_prob
        with torch.no_grad():
            for k, v in flow.named_buffers():
                if k in buffers:
                    v.copy_(buffers[k])
    return watcher.found or Culprit("objective")


def lr_hint(train_cfg: dict, run_dir: Any, saved_step: int | None) -> str:
    """How to go on with a lower learning rate (resume if a checkpoint exists)."""
    from flowspec.registry import split_named

    name, params = split_named(train_cfg["optimizer"])
    lr = float((params or {}).get("lr", 1e-3))
    lower = f"train.optimizer.{name}.lr={lr / 10:g}"
    if saved_step:
        return (f"resume from the last checkpoint (step {saved_step}) with a lower learning "
                f"rate: flowspec train --resume {run_dir} --set {lower}; train.grad_clip or "
                f"train.warmup_steps also help")
    return (f"no checkpoint was written yet: train again with a lower learning rate "
            f"(--set {lower}), train.grad_clip or train.warmup_steps")
