"""Shared CLI plumbing: consoles, error handling, option types, checkpoints, output paths.

Nothing here imports torch at module level: ``flowspec --help``, ``--version``,
``runs`` and friends must start fast.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from flowspec.errors import FlowspecError, UnknownNameError


def is_tty() -> bool:
    return sys.stdout.isatty()


# In a pipe or a log file rich would hard-wrap every line at 80 columns; soft_wrap
# leaves long lines whole (grep-able). Terminals keep rich's layout.
console = Console(soft_wrap=not is_tty(), width=None if is_tty() else 100_000)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

SetOption = typer.Option(
    None, "--set", metavar="PATH=VALUE",
    help="Override a spec value by its dotted path: --set train.optimizer.adam.lr=3e-4 "
         "--set vars.K=4 --set train.steps=500 (repeatable).")
DataDirOption = typer.Option(
    None, "--data-dir", envvar="FLOWSPEC_DATA",
    help="Where datasets live (default: $FLOWSPEC_DATA, else ./data).")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
CkptArgument = typer.Argument(
    ..., help="Checkpoint (.safetensors), run directory, or runs/<name> (its newest finished "
              "run).")
WhichOption = typer.Option(
    None, "--which", help="best | last (default: best when the run has one, else last).")
UntrainedOption = typer.Option(
    False, "--untrained", help="Accept a spec file: use an untrained (randomly initialised) "
                               "flow on purpose.")

SPEC_KEYWORDS = {
    "factor_out": "a spec keyword, not a node: in a sequential flow it splits the tensor and "
                  "sends the second part to a latent (see docs/spec-language.md)",
    "repeat": "a spec keyword, not a node: `- repeat: N` with `body:` repeats a list of nodes",
    "blocks": "a spec section, not a node: parameterised sub-flows called by name",
    "graph": "a spec keyword, not a node: an explicit graph with named ports",
}


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


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    """A Python warning raised under a command, printed as ``warning: text`` (no source
    file and line: they mean nothing to a user)."""
    warn(str(message))


def user_errors(fn: F) -> F:
    """Turn user errors into one clear message each and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():  # Python warnings as the CLI's own lines
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except FlowspecError as err:
            report_error(err)
            raise typer.Exit(2) from None
        except UnknownNameError as err:
            report_error(FlowspecError(err.message))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def note(text: str) -> None:
    """A line about what a command chose (which checkpoint, where output went): stderr,
    so ``--json`` output on stdout stays machine-readable."""
    err_console.print(text, highlight=False, markup=False)


def warn(text: str) -> None:
    line = Text("warning", style="bold yellow")
    line.append(f": {text}")
    err_console.print(line, highlight=False)


def parse_floats(text: str, what: str, minimum: float | None = None) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0]; at least one number, each >= ``minimum``."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FlowspecError(f"{what}: expected comma-separated numbers, got '{text}'") from None
    if not values:
        raise FlowspecError(f"{what}: expected at least one number, got '{text}'",
                            hint=f"e.g. {what} -1,0,1")
    if minimum is not None and any(v < minimum for v in values):
        raise FlowspecError(f"{what}: every value must be >= {minimum:g}, got '{text}'")
    return values


def unknown_catalogue_name(name: str) -> FlowspecError:
    """The error for ``flowspec nodes NAME`` when NAME is in no registry."""
    if name in SPEC_KEYWORDS:
        return FlowspecError(f"'{name}' is {SPEC_KEYWORDS[name]}",
                             hint="`flowspec nodes` lists the nodes")
    from flowspec.catalogue import known_names, train_options
    from flowspec.registry import did_you_mean

    sug = did_you_mean(name, known_names() + list(SPEC_KEYWORDS)
                       + [o.name for o in train_options()])
    return FlowspecError(f"no node, net, prior, dataset, preprocessing step, energy or "
                         f"training option named '{name}'",
                         hint=f"did you mean '{sug[0]}'?" if sug else
                         "`flowspec nodes` lists them all")


# -- checkpoints -----------------------------------------------------------------------
def load_flow(ckpt: Path, device: str = "cpu", which: str | None = None,
              untrained: bool = False, quiet: bool = False) -> tuple[Any, Any]:
    """``(flow, resolved)`` for a command that needs a trained flow; says which it used
    (on stderr; ``quiet`` for ``--json``, whose output carries it instead).

    A spec file is refused (it would silently give an untrained flow) unless
    ``untrained``; then ``resolved`` is None and a warning says so.
    """
    import flowspec
    from flowspec.api import resolve_device
    from flowspec.run.listing import resolve_run

    if ckpt.suffix in (".yaml", ".yml") or (ckpt.is_file() and ckpt.suffix != ".safetensors"):
        if not untrained:
            raise FlowspecError(
                f"{ckpt} is a spec, not a trained checkpoint: this would use an untrained "
                "(randomly initialised) flow",
                hint=f"train it first (flowspec train {ckpt}) and pass the run directory, or "
                     "add --untrained to use random weights on purpose")
        if which is not None:
            raise FlowspecError("--which applies to run directories, not to a spec")
        warn(f"using an UNTRAINED flow built from {ckpt} (random weights, --untrained)")
        return flowspec.load(ckpt).to(resolve_device(device)), None
    if untrained:
        raise FlowspecError(f"--untrained was given, but {ckpt} is not a spec file",
                            hint="drop --untrained to use the trained checkpoint")
    resolved = resolve_run(ckpt, which)
    for line in resolved.notes if not quiet else ():
        note(line)
    flow = flowspec.load(resolved.checkpoint)
    if not quiet:
        note(f"checkpoint: {resolved.describe()}")
    return flow.to(resolve_device(device)), resolved


# -- output files ------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def check_output(path: Path, allowed: Sequence[str], option: str = "-o") -> Path:
    """Refuse an unknown extension or a parent that is a file; create missing parents."""
    if path.suffix.lower() not in allowed:
        raise FlowspecError(f"{option} {path}: unknown file type '{path.suffix or '(none)'}'",
                            hint="use one of " + ", ".join(allowed))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FlowspecError(f"{option} {path}: {parent} is a file, not a directory")
            break
    if path.is_dir():
        raise FlowspecError(f"{option} {path} is a directory", hint="give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fresh_path(path: Path) -> Path:
    """``path``, or ``stem-2.ext``, ``stem-3.ext``... if it exists: never overwrite."""
    if not path.exists():
        return path
    for i in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FlowspecError(f"too many files named like {path}")


def output_for(explicit: Path | None, resolved: Any, folder: str, name: str,
               allowed: Sequence[str]) -> tuple[Path, bool]:
    """Where a command writes: ``explicit`` (checked), else a fresh file
    ``RUN/<folder>/<name>`` in the run directory (the working directory for untrained
    flows). Returns ``(path, replaces_existing)``."""
    if explicit is not None:
        path = check_output(explicit, allowed)
        return path, path.exists()
    if resolved is not None:
        base = resolved.run_dir or resolved.checkpoint.parent
        path = base / folder / name
    else:
        path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return fresh_path(path), False


def wrote(path: Path, replaced: bool) -> None:
    console.print(f"wrote {path}" + (" (replaced the existing file)" if replaced else ""),
                  highlight=False, markup=False)


def num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


# -- tables ------------------------------------------------------------------------------
def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]],
                title: str | None = None) -> None:
    """A rich table on a terminal; plain aligned columns (one row per line, never
    wrapped) in a pipe or log."""
    cells = [[num(c) for c in row] for row in rows]
    if is_tty():
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in cells:
            table.add_row(*row)
        console.print(table)
        return
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if title:
        print(title)
    for row in [list(columns)] + cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    sys.stdout.flush()
