"""Collecting every problem of a spec before raising one :class:`SpecError`."""

from __future__ import annotations

from flowspec.errors import Location, Problem, SpecError
from flowspec.spec.limits import MAX_LISTED_PROBLEMS


def join_path(path: str, key: str | int) -> str:
    """``model.flow`` + 2 -> ``model.flow[2]``; ``train`` + ``lr`` -> ``train.lr``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Problems:
    """An ordered, de-duplicated list of located problems.

    A problem inside a repeated body or a block used several times is found once
    per copy; identical (location, path, message) triples are kept once.
    """

    def __init__(self, file: str | None = None):
        self.file = file
        self.items: list[Problem] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._poisoned: set[Location] = set()
        #: every problem found, including repeats and follow-ons that are not listed
        self.found = 0

    def poison(self, loc: Location | None) -> None:
        """A value already reported as unusable: later problems at ``loc`` are follow-ons."""
        if loc is not None and loc.line is not None:
            self._poisoned.add(loc)

    def add(self, message: str, path: str = "", loc: Location | None = None,
            hint: str | None = None) -> None:
        self.found += 1
        if loc is None:
            loc = Location(self.file)
        key = (str(loc), path, message)
        if key in self._seen or loc in self._poisoned:
            return
        self._seen.add(key)
        self.items.append(Problem(message, path, loc, hint))

    def extend(self, problems: list[Problem], poison: bool = False) -> None:
        for p in problems:
            self.add(p.message, p.path, p.loc, p.hint)
            if poison:
                self.poison(p.loc)

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self) -> None:
        """Raise one :class:`SpecError` with the problems in file order (the first ones only)."""
        if self.items:
            listed = sorted(self.items, key=_position)
            if len(listed) > MAX_LISTED_PROBLEMS:
                more = len(listed) - MAX_LISTED_PROBLEMS
                listed = [*listed[:MAX_LISTED_PROBLEMS],
                          Problem(f"... and {more:,} more problems", "", Location(self.file),
                                  "fix these first; most of the rest often follow from them")]
            error = SpecError(listed)
            error.total = len(self.items)  # type: ignore[attr-defined]  # for the CLI's count
            raise error


def _position(p: Problem) -> tuple:
    """File order for problems with a line; the rest (overrides) keep their order, last."""
    loc = p.loc or Location()
    if loc.line is None:
        return (1, 0, 0)
    return (0, loc.line, loc.col or 0)
