"""Shared CLI plumbing: consoles, error handling, option types."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from flowspec.errors import FlowspecError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

SetOption = typer.Option(
    None, "--set", help="Override a spec value: --set train.lr=3e-4 --set vars.K=4 (repeatable)."
)
DataDirOption = typer.Option(
    None, "--data-dir", envvar="FLOWSPEC_DATA",
    help="Where datasets live (default: $FLOWSPEC_DATA, else ./data).")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")


def report_error(err: FlowspecError) -> None:
    """One line per problem. User text (keys, paths, values) is never read as rich markup:
    a key like ``[/x]`` or ``[old]`` is printed as written."""
    for problem in err.problems:
        line = Text("error", style="bold red")
        line.append(f": {problem.format()}")
        err_console.print(line, highlight=False, soft_wrap=True)
    total = getattr(err, "total", len(err.problems))  # more than listed when truncated
    if total > 1:
        err_console.print(f"{total} problems", style="red")


def user_errors(fn: F) -> F:
    """Turn user errors into one clear message each and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlowspecError as err:
            report_error(err)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FlowspecError(f"{what}: expected comma-separated numbers, got '{text}'") from None


def is_tty() -> bool:
    return sys.stdout.isatty()
