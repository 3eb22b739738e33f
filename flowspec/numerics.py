"""Root finding for the numerically inverted nodes (planar, BNAF).

One solver for a batch of independent 1-D problems ``f(x) = target`` with ``f``
increasing: the bracket grows (doubling) until it holds the root, then a
safeguarded Newton iteration runs -- a Newton step when it lands inside the
bracket, bisection otherwise or when the bracket stops halving -- so it
converges like Newton near the root and can never leave the bracket.

The iteration runs without autograd. When gradients are on, one last Newton
step is taken *with* autograd from the (detached) solution; its value is the
solution, and its gradient is exactly the implicit-function gradient
``dx = -(df/dθ - dtarget) / f'(x)``, so solved directions train like closed-form
ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowspec.errors import FlowspecError

#: ``fn(x) -> (f(x), f'(x) or None)``, elementwise over a batch of problems.
MonotoneFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


class RootNotBracketed(FlowspecError):
    """The target is outside the range of a monotone map, so it has no preimage."""


def solve_monotone(
    fn: MonotoneFn,
    target: torch.Tensor,
    *,
    guess: torch.Tensor | None = None,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    xtol: float = 0.0,
    max_iter: int = 200,
    max_expand: int = 64,
) -> torch.Tensor:
    """Solve ``f(x) = target`` elementwise for increasing ``f``; returns ``x`` like ``target``.

    ``guess`` (default: ``target``) centres the first bracket ``[guess - 1, guess + 1]``;
    ``lo``/``hi`` give a bracket instead (it is still checked and grown if wrong).
    Iteration stops per element when the bracket or the Newton step is below
    ``xtol + 4 eps max(|x|, 1)`` (machine precision by default). Non-finite targets give NaN.
    Raises :class:`RootNotBracketed` when a finite target is not reached after
    ``max_expand`` doublings of the bracket (a map with a bounded range).
    """
    with torch.no_grad():
        x = _solve(fn, target.detach(), guess, lo, hi, xtol, max_iter, max_expand)
    if not torch.is_grad_enabled():
        return x
    f, df = fn(x)
    if not (f.requires_grad or target.requires_grad):
        return x
    if df is None:
        raise ValueError("solve_monotone: fn must return f'(x) for gradients to flow")
    step = (f - target) / df.detach()
    return x - torch.where(torch.isfinite(step), step, torch.zeros_like(step))


def _value(fn: MonotoneFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    f, df = fn(x)
    return f.detach(), (df.detach() if df is not None else None)


def _solve(fn, t, guess, lo, hi, xtol, max_iter, max_expand) -> torch.Tensor:
    live = torch.isfinite(t)
    t0 = torch.where(live, t, torch.zeros_like(t))
    centre = (guess.detach() if guess is not None else t0).clone()
    centre = torch.where(torch.isfinite(centre), centre, t0)
    lo = (lo.detach().clone() if lo is not None else centre - 1.0).to(t.dtype)
    hi = (hi.detach().clone() if hi is not None else centre + 1.0).to(t.dtype)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    lo, hi = _expand(fn, t0, lo, hi, live, max_expand)

    eps = torch.finfo(t.dtype).eps
    x = torch.where((centre > lo) & (centre < hi), centre, 0.5 * (lo + hi))
    r_before = torch.full_like(x, float("inf"))  # |residual| of the previous iterate
    done = ~live
    for _ in range(max_iter):
        f, df = _value(fn, x)
        r = f - t0
        lo = torch.where(~done & (r < 0), x, lo)
        hi = torch.where(~done & (r > 0), x, hi)
        mid = 0.5 * (lo + hi)
        if df is not None:
            newton = x - r / df
            # Newton only inside the bracket, and only while the residual keeps halving.
            ok = torch.isfinite(newton) & (newton > lo) & (newton < hi)
            ok &= r.abs() <= 0.5 * r_before
            nxt = torch.where(ok, newton, mid)
        else:
            newton = nxt = mid
        r_before = r.abs()
        tol = xtol + 4 * eps * torch.clamp(x.abs(), min=1.0)
        settled = (newton - x).abs() <= tol  # the Newton step says: at the root
        converged = (r == 0) | (hi - lo <= tol) | settled
        nxt = torch.where(settled, newton, nxt)
        x = torch.where(done | (r == 0), x, nxt)
        done = done | converged
        if bool(done.all()):
            break
    return torch.where(live, x, torch.full_like(x, float("nan")))


def _expand(fn, t, lo, hi, live, max_expand) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow ``[lo, hi]`` (doubling the step) until ``f(lo) <= t <= f(hi)`` where ``live``."""
    step = (hi - lo).clamp_min(1.0)
    f_lo, _ = _value(fn, lo)
    f_hi, _ = _value(fn, hi)
    for _ in range(max_expand + 1):
        below, above = live & (f_lo > t), live & (f_hi < t)
        any_below, any_above = bool(below.any()), bool(above.any())
        if not (any_below or any_above):
            return lo, hi
        # The old end becomes the other side of the bracket: the root lies beyond it.
        new_lo = torch.where(below, lo - step, torch.where(above, hi, lo))
        new_hi = torch.where(above, hi + step, torch.where(below, lo, hi))
        f_new_lo = torch.where(above, f_hi, f_lo)
        f_new_hi = torch.where(below, f_lo, f_hi)
        lo, hi, f_lo, f_hi = new_lo, new_hi, f_new_lo, f_new_hi
        if any_below:
            f_lo = torch.where(below, _value(fn, lo)[0], f_lo)
        if any_above:
            f_hi = torch.where(above, _value(fn, hi)[0], f_hi)
        step = torch.where(below | above, 2 * step, step)
    raise RootNotBracketed(
        "a numerically inverted node could not reach its target: the value lies outside the "
        "range of the map",
        hint="use an unbounded variant of the node (e.g. bnaf with residual: gated)",
    )

