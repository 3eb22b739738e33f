"""User-facing errors.

Everything a user can get wrong (a spec, a dataset path, a checkpoint) raises a
:class:`FlowspecError`. The CLI prints its problems, one per line, and exits 2;
it never shows a traceback for these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A position in a source file; line and column are 1-based."""

    file: str | None = None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<spec>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where it is, and how to fix it."""

    message: str
    path: str = ""
    loc: Location | None = None
    hint: str | None = None

    def format(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return f"{self.loc}: {text}" if self.loc is not None else text


class FlowspecError(Exception):
    """An error caused by user input; carries one or more located problems."""

    def __init__(self, problems: Problem | str | list[Problem], hint: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, hint=hint)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


class SpecError(FlowspecError):
    """The spec is malformed: bad YAML, schema violation, bad graph or shapes."""


class DataError(FlowspecError):
    """A dataset is missing, corrupt or of the wrong format."""


class CheckpointError(FlowspecError):
    """A checkpoint cannot be read or does not match its spec."""


class ShapeError(ValueError):
    """Raised by a node's ``out_shape`` when it cannot take ``in_shape``.

    Carries only the message; the graph layer adds the node's location.
    """


class UnknownNameError(KeyError):
    """A name not in a registry; the message carries a 'did you mean' hint."""

    def __init__(self, kind: str, name: str, suggestions: list[str], known: list[str]):
        self.kind, self.name, self.suggestions, self.known = kind, name, suggestions, known
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"unknown {self.kind} '{self.name}'"
        if self.suggestions:
            return text + f" (did you mean '{self.suggestions[0]}'?)"
        return text + f" (known: {', '.join(self.known)})"

    def __str__(self) -> str:
        return self.message
