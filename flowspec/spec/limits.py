"""The spec language's size limits, in one place (documented in docs/spec-language.md).

A spec is untrusted input: a few hostile lines can ask for a billion values
(YAML aliases), a number with millions of digits (``${10**4096**4096}``) or
millions of nodes (nested ``repeat``). Every stage of loading stops at these
limits with a located error instead of hanging or exhausting memory; each is far
above what a real flow needs (Glow on CelebA is ~400 nodes, ~10k values).
"""

from __future__ import annotations

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
