"""The spec language's size limits, in one place (documented in docs/spec-language.md),
and :class:`UnrollBudget`, which enforces the unrolling ones.

A spec is untrusted input: a few hostile lines can ask for a billion values
(YAML aliases), a number with millions of digits (``${10**4096**4096}``) or
millions of nodes (nested ``repeat``). Every stage of loading stops at these
limits with a located error instead of hanging or exhausting memory; each is far
above what a real flow needs (specs/glow_celeba.yaml: 391 nodes, ~1,600 values).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowspec.errors import Location
    from flowspec.spec.problems import Problems

#: bytes of YAML text in one spec file.
MAX_SPEC_BYTES = 4 * 1024 * 1024
#: values (scalars, lists, mappings) a YAML document may build, aliases expanded.
MAX_YAML_VALUES = 500_000
#: lists/mappings nested inside each other.
MAX_NESTING = 64
#: characters inside one ``${...}``.
MAX_EXPR_CHARS = 500
#: syntax nodes (numbers, names, operators) in one ``${...}``.
MAX_EXPR_TERMS = 200
#: operators nested inside each other in one ``${...}``.
MAX_EXPR_DEPTH = 100
#: decimal digits of an integer written in a spec or computed by an expression.
MAX_INT_DIGITS = 100
#: largest integer a validated value may have (what a 64-bit integer holds).
MAX_INT = 2**63 - 1
#: nodes and latents of a model after every repeat and block is unrolled.
MAX_NODES = 50_000
#: repeat iterations and block calls, all of them together, while unrolling.
MAX_UNROLL_STEPS = 200_000
#: values produced while substituting variables and unrolling (copies included).
MAX_EXPANDED_VALUES = 1_000_000
#: elements of one example (the product of ``model.input``).
MAX_INPUT_ELEMENTS = 2**28
#: problems listed in one error; the rest are counted.
MAX_LISTED_PROBLEMS = 50


_INT_BOUND = 10**MAX_INT_DIGITS


def digits_ok(n: int) -> bool:
    """Whether ``n`` has at most :data:`MAX_INT_DIGITS` decimal digits (without printing it)."""
    return -_INT_BOUND < n < _INT_BOUND


class LimitReached(Exception):
    """Unrolling went past a limit (already reported): lowering stops at once."""


class UnrollBudget:
    """Counts what lowering unrolls; reports and raises :class:`LimitReached` past a limit.

    Checked *while* unrolling, and projected after a repeat's first iteration, so
    ``repeat: 100000`` fails at once instead of after building 50,000 nodes.
    """

    def __init__(self, problems: Problems):
        self.problems = problems
        self.items = 0  # nodes and latents
        self.steps = 0  # repeat iterations and block calls

    def _stop(self, message: str, path: str, loc: Location | None, hint: str) -> None:
        self.problems.add(message, path, loc, hint)
        raise LimitReached

    def item(self, nid: str, path: str, loc: Location | None) -> None:
        self.items += 1
        if self.items > MAX_NODES:
            self._stop(f"the model unrolls to more than {MAX_NODES:,} nodes (reached at "
                       f"'{nid}')", path, loc,
                       "use smaller repeat counts; see 'Limits' in docs/spec-language.md")

    def step(self, path: str, loc: Location | None) -> None:
        """One repeat iteration or block call (they may unroll to no node at all)."""
        self.steps += 1
        if self.steps > MAX_UNROLL_STEPS:
            self._stop(f"repeats and block calls unroll more than {MAX_UNROLL_STEPS:,} times",
                       path, loc, "nested repeats multiply; use smaller repeat counts")

    def mark(self) -> tuple[int, int]:
        return self.items, self.steps

    def projected(self, before: tuple[int, int], n: int, path: str,
                  loc: Location | None) -> None:
        """After the first of ``n`` iterations (begun at ``before``): could all n fit?"""
        (items0, steps0), (items1, steps1) = before, self.mark()
        per_items, per_steps = items1 - items0, steps1 - steps0
        total = items0 + per_items * n
        if total > MAX_NODES:
            self._stop(f"repeat: {n} unrolls to about {per_items * n:,} nodes ({per_items} per "
                       "iteration)" + (f", {total:,} in the model" if items0 else "")
                       + f"; a model has at most {MAX_NODES:,}", path, loc,
                       "use a smaller repeat count; see 'Limits' in docs/spec-language.md")
        if steps0 + per_steps * n > MAX_UNROLL_STEPS:
            self._stop(f"repeat: {n} unrolls about {per_steps * n:,} nested repeats and block "
                       f"calls; at most {MAX_UNROLL_STEPS:,} are allowed", path, loc,
                       "nested repeats multiply; use smaller repeat counts")
