"""Results computed once per data file, kept in the user cache dir and keyed by the file.

A pass over a file larger than memory (its sha256, its per-row checks) costs minutes;
a resumed run, ``flowspec eval`` and the next run of the same file must not pay it
again. The key is the file's *fingerprint* -- path, size, mtime (ns), inode and a
hash of 16 blocks of 4 KiB spread over the file -- which costs 16 reads however big
the file is. A file rewritten in place with the same size and mtime to the
nanosecond and the same sampled blocks would be taken for the old one; everything
else changes the key and the pass runs again.

The cache dir is ``$FLOWSPEC_CACHE``, else ``$XDG_CACHE_HOME/flowspec``, else
``~/.cache/flowspec`` (shared with :mod:`flowspec.data.folder`'s decoded images).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SAMPLED_BLOCKS, BLOCK = 16, 4096


def user_cache_dir() -> Path:
    env = os.environ.get("FLOWSPEC_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "flowspec"


def fingerprint(path: Path) -> str:
    """A cheap identity of a file's contents: stat fields plus sampled blocks."""
    path = Path(path).resolve()
    st = path.stat()
    h = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode())
    with open(path, "rb") as fh:
        for i in range(SAMPLED_BLOCKS):
            fh.seek(max(0, st.st_size - BLOCK) * i // max(1, SAMPLED_BLOCKS - 1))
            h.update(fh.read(BLOCK))
    return h.hexdigest()[:32]


def _path(kind: str, key: str) -> Path:
    return user_cache_dir() / "streams" / kind / f"{key}.json"


def cached(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-able result, computed once per ``(kind, key)``."""
    p = _path(kind, key)
    try:
        return json.loads(p.read_text())["value"]
    except (OSError, ValueError, KeyError):
        pass
    value = compute()
    try:  # a read-only cache dir costs a recomputation next time, nothing else
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"value": value}, fh)
        os.replace(tmp, p)
    except OSError:
        pass
    return value


def cached_digest(path: Path) -> str:
    """The file's sha256, read once per fingerprint (see the module doc)."""
    from flowspec.data.tables import file_digest

    return cached("sha256", fingerprint(path), lambda: file_digest(path))
