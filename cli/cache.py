"""Replay the output of read-only catalogue commands (``schema``, ``nodes``) from a cache.

Both need the registries, and registering nodes imports torch (seconds). Their
output depends only on the installed flowspec code, its plugins and the terminal,
so the first run records it in ``$XDG_CACHE_HOME/flowspec/cli/`` (else
``~/.cache/flowspec/cli/``) under a key of: the command and its arguments, the size
and mtime of every flowspec source file, the Python version, and the terminal's
width and colour settings. Any edit to flowspec changes the key. When a plugin
package is installed (entry points ``flowspec.*``) nothing is cached: its code is
outside the fingerprint. ``FLOWSPEC_NO_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

PLUGIN_GROUPS = ("flowspec.nodes", "flowspec.nets", "flowspec.priors", "flowspec.energies",
                 "flowspec.datasets")


def cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "flowspec" / "cli"


def _has_plugins() -> bool:
    from importlib import metadata

    eps = metadata.entry_points()
    return any(len(eps.select(group=g)) for g in PLUGIN_GROUPS)


def source_fingerprint() -> str:
    """Size and mtime of every file of the flowspec library and of this CLI (both shape
    the output; no import of them beyond their locations)."""
    import flowspec
    import flowspec_cli

    h = hashlib.sha256()
    for package in (flowspec, flowspec_cli):
        for dirpath, dirnames, filenames in os.walk(Path(package.__file__).parent):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fname in sorted(filenames):
                if fname.endswith((".py", ".json", ".yaml")):
                    st = os.stat(os.path.join(dirpath, fname))
                    h.update(f"{dirpath}/{fname}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _key(command: str, kwargs: dict[str, Any]) -> str | None:
    if os.environ.get("FLOWSPEC_NO_CACHE") or _has_plugins():
        return None
    from flowspec_cli.common import console

    parts = [command, repr(sorted(kwargs.items())), source_fingerprint(), sys.version,
             str(console.width), str(console.is_terminal), str(console.color_system),
             *(f"{k}={os.environ.get(k, '')}" for k in ("NO_COLOR", "FORCE_COLOR", "TERM",
                                                         "COLUMNS"))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class _Tee(io.TextIOBase):
    """Writes through to the real stdout and keeps a copy; looks like it to rich."""

    def __init__(self, real: Any):
        self.real, self.copy = real, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.real.write(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")


def cached_output(command: str) -> Callable:
    """Decorator: serve the command's stdout from the cache, or run it and record it."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                key = _key(command, kwargs)
            except Exception:  # a cache problem must never break the command
                key = None
            path = cache_dir() / f"{key}.out" if key else None
            if path is not None and path.is_file():
                sys.stdout.write(path.read_text(encoding="utf-8"))
                sys.stdout.flush()
                return None
            if path is None:
                return fn(*args, **kwargs)
            tee = _Tee(sys.stdout)
            with redirect_stdout(tee):
                result = fn(*args, **kwargs)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(tee.copy.getvalue())
                os.replace(tmp, path)
            except OSError:
                pass
            return result

        return wrapper

    return deco
