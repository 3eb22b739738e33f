"""Failed writes as user errors: which path, what went wrong, what to do.

A read-only filesystem, a path that is a file, a full disk or missing permissions
are user-side conditions, not bugs: they become a :class:`~flowspec.errors.FlowspecError`
naming the path and a fix, never a traceback. safetensors reports I/O failures as
``SafetensorError`` with the OS error number only in its text, so that is parsed too.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from flowspec.errors import CheckpointError, FlowspecError

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, or pass --out on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space, or pass --out elsewhere",
    errno.EROFS: "the filesystem is read-only: pass --out to a writable directory",
    errno.EACCES: "permission denied: pass --out to a directory you can write to",
    errno.EPERM: "permission denied: pass --out to a directory you can write to",
    errno.ENOTDIR: "a component of this path is a file, not a directory: pass --out to a "
                   "directory",
    errno.EEXIST: "a file is in the way of this directory: pass --out to a directory",
    errno.EISDIR: "this path is a directory, not a file",
    errno.ENOENT: "a parent directory vanished or cannot be created: check the path",
}


def os_errno(err: BaseException) -> int | None:
    """The OS error number of ``err`` (an OSError, or a SafetensorError's '(os error N)')."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno
    found = re.search(r"os error (\d+)", str(err))
    return int(found.group(1)) if found else None


def write_error(path: str | os.PathLike, err: BaseException, what: str = "write",
                checkpoint: bool = False) -> FlowspecError:
    """A user error for a failed write of ``path`` (``what``: 'write', 'create', ...)."""
    code = os_errno(err)
    reason = os.strerror(code) if code is not None else str(err)
    hint = _HINTS.get(code, "check that the directory exists, is writable and has free space") \
        if code is not None else "check that the directory is writable and has free space"
    cls = CheckpointError if checkpoint else FlowspecError
    return cls(f"{Path(path)}: cannot {what}: {reason}", hint=hint)
