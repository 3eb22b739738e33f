"""``${...}`` expressions: arithmetic on variables, and nothing else.

An expression is parsed with :mod:`ast` and walked by hand; only numbers,
variable names, ``+ - * / // % **``, unary minus/plus, parentheses and
``min``/``max`` calls are accepted, so a spec can never run code.

A string that is exactly ``"${...}"`` becomes the value of the expression (an
int stays an int, a list stays a list); inside a longer string the value is
written as text.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from flowspec.registry import did_you_mean
from flowspec.spec.limits import (
    MAX_EXPR_CHARS,
    MAX_EXPR_DEPTH,
    MAX_EXPR_TERMS,
    MAX_INT_DIGITS,
    digits_ok,
)

EXPR_RE = re.compile(r"\$\{([^{}]*)\}")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS = {"min": min, "max": max}


class ExprError(ValueError):
    """An expression that cannot be evaluated; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


_SYNTAX_HINT = "expressions are arithmetic: numbers, variables, + - * / // % **, min(), max()"


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> ast.Expression:
    """Parse, refusing expressions too long, too big or too deep to evaluate safely.

    Cached: a repeated body evaluates the same few expressions once per copy (the
    trees are only read).
    """
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"the expression '${{{_short(text)}}}' is longer than {MAX_EXPR_CHARS} "
                        "characters", "split it into variables")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExprError(f"cannot parse the expression '${{{_short(text)}}}'",
                        _SYNTAX_HINT) from None
    terms, depth = _size(tree.body)
    if terms > MAX_EXPR_TERMS:
        raise ExprError(f"the expression '${{{_short(text)}}}' has more than {MAX_EXPR_TERMS} "
                        "terms", "split it into variables")
    if depth > MAX_EXPR_DEPTH:
        raise ExprError(f"the expression '${{{_short(text)}}}' nests more than "
                        f"{MAX_EXPR_DEPTH} levels", "split it into variables")
    return tree


def _size(root: ast.AST) -> tuple[int, int]:
    """(number of syntax nodes, depth), without recursion (the tree may be deep)."""
    count, deepest = 0, 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if count > MAX_EXPR_TERMS:
            break
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node)
                     if not isinstance(child, (ast.operator, ast.unaryop, ast.expr_context)))
    return count, deepest


def names_in(text: str) -> list[str]:
    """Variable names an expression reads, in order of appearance (checked for safety)."""
    tree = _parse(text)
    out: list[str] = []
    _walk(tree.body, lambda name: out.append(name) or 0)
    return list(dict.fromkeys(out))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _walk(node: ast.AST, lookup: Callable[[str], Any]) -> Any:
    if isinstance(node, ast.Constant):
        if _number(node.value):
            return _checked(node.value)
        raise ExprError(f"only numbers may appear in expressions, got "
                        f"{_short(repr(node.value))}")
    if isinstance(node, ast.Name):
        return lookup(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _walk(node.operand, lookup)
        _need_number(v, "unary minus")
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _walk(node.left, lookup), _walk(node.right, lookup)
        _need_number(a, "arithmetic")
        _need_number(b, "arithmetic")
        if isinstance(node.op, ast.Pow):
            _check_power(a, b)
        try:
            return _checked(_BINOPS[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except OverflowError:
            raise ExprError("the result is too large") from None
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS and not node.keywords and node.args):
        args = [_walk(a, lookup) for a in node.args]
        for a in args:
            _need_number(a, node.func.id)
        return _FUNCS[node.func.id](args)
    raise ExprError("expressions may only use numbers, variables, + - * / // % **, "
                    "parentheses, min() and max()")


def _check_power(a: Any, b: Any) -> None:
    """Refuse ``a ** b`` whose integer result would be too long, *before* computing it."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        digits = b * math.log10(abs(a)) if digits_ok(a) else math.inf
        if digits > MAX_INT_DIGITS:
            raise ExprError(f"{_short(str(a)) if digits_ok(a) else 'a huge number'} ** {b} has "
                            f"more than {MAX_INT_DIGITS} digits",
                            f"integers in expressions have at most {MAX_INT_DIGITS} digits")
    if isinstance(b, complex) or (isinstance(a, (int, float)) and a < 0 and isinstance(b, float)
                                  and not b.is_integer()):
        raise ExprError(f"{a} ** {b} is not a real number")


def _checked(v: Any) -> Any:
    """Every intermediate integer is bounded, so no operation can take long."""
    if isinstance(v, complex):
        raise ExprError("the result is not a real number")
    if isinstance(v, int) and not isinstance(v, bool) and not digits_ok(v):
        raise ExprError(f"the result has more than {MAX_INT_DIGITS} digits",
                        f"integers in expressions have at most {MAX_INT_DIGITS} digits")
    return v


def _need_number(v: Any, what: str) -> None:
    if not _number(v):
        raise ExprError(f"{what} needs numbers, got {json.dumps(v, default=str)}")


def evaluate(text: str, env: Mapping[str, Any]) -> Any:
    """Evaluate the inside of ``${...}`` with variables from ``env``."""
    tree = _parse(text)

    def lookup(name: str) -> Any:
        if name in env:
            return env[name]
        raise unknown_variable(name, list(env))

    value = _walk(tree.body, lookup)
    if isinstance(value, float) and not math.isfinite(value) and not isinstance(
            tree.body, ast.Name):
        raise ExprError(f"'${{{_short(text)}}}' is not a finite number")
    return value


def variable_hint(name: str, known: list[str], *, prefix: str = "", listing: str = "known: ",
                  none: str = "declare it under vars:") -> str:
    """'did you mean' (case-insensitive matches first), else the known names, else ``none``."""
    known = sorted({str(k) for k in known})
    sug = [k for k in known if k.lower() == name.lower()] or did_you_mean(name, known)
    if sug:
        return f"did you mean '{prefix}{sug[0]}'?"
    return listing + ", ".join(known) if known else none


def unknown_variable(name: str, known: list[str]) -> ExprError:
    return ExprError(f"unknown variable '{name}'", variable_hint(name, known))


def has_expr(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def exact(text: str) -> str | None:
    """The inside of a string that is exactly one ``${...}``, else None."""
    m = EXPR_RE.fullmatch(text)
    return m.group(1) if m else None


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


def substitute_str(text: str, env: Mapping[str, Any]) -> Any:
    """Substitute every ``${...}`` in ``text``; an exact one keeps its value's type."""
    inner = exact(text)
    if inner is not None:
        return evaluate(inner, env)
    return EXPR_RE.sub(lambda m: as_text(evaluate(m.group(1), env)), text)


def expr_names(text: str) -> list[str]:
    """All variable names read by the ``${...}`` parts of ``text``."""
    out: list[str] = []
    for m in EXPR_RE.finditer(text):
        out.extend(names_in(m.group(1)))
    return list(dict.fromkeys(out))
