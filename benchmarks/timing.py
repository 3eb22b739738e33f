"""Shared timing helpers for the benchmarks (same step, same clock, for both sides)."""

from __future__ import annotations

from collections.abc import Callable


def train_step(log_prob: Callable, opt, x) -> Callable[[], None]:
    """One maximum-likelihood step: zero grads, -mean log p, backward, optimizer step."""

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = -log_prob(x).mean()
        loss.backward()
        opt.step()

    return step
