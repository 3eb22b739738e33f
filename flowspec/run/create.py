"""Run directories: ``<root>/<name>/<time>-<spec hash>``, never overwritten.

Each run gets a random ``run_id`` (in ``run.json`` and in every checkpoint and
state file it writes), so a state file copied from another run is recognised.
Failures to create or write (read-only filesystem, a file in the way, a full
disk) are user errors naming the path, never tracebacks.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from flowspec.errors import FlowspecError
from flowspec.oserrors import write_error
from flowspec.run.layout import OVERRIDES, RUN_JSON, SPEC


def spec_hash(spec_yaml: str) -> str:
    return hashlib.sha256(spec_yaml.encode()).hexdigest()[:8]


def new_run_id() -> str:
    return uuid.uuid4().hex


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("flowspec", "torch", "safetensors", "pyyaml", "jsonschema"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_run_dir(root: str | Path, name: str, spec_yaml: str) -> Path:
    base = Path(root) / name
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{spec_hash(spec_yaml)}"
    if Path(root).exists() and not Path(root).is_dir():
        raise FlowspecError(f"--out {root} is a file, not a directory",
                            hint="pass --out a directory (it is created if missing)")
    for i in range(1000):
        candidate = base / (stem if i == 0 else f"{stem}-{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            if not base.is_dir():
                raise write_error(base, FileExistsError(17, "File exists"),
                                  "create the run directory") from None
            continue
        except OSError as err:
            raise write_error(candidate, err, "create the run directory") from None
    raise FlowspecError(f"cannot create a fresh run directory under {base}",
                        hint="remove old runs or pass another --out")


def write_run_files(run_dir: Path, spec_yaml: str, overrides: Any, info: dict[str, Any]) -> None:
    """The run's spec, the overrides it was made with and ``run.json`` (``info`` plus
    library versions and the command line)."""
    files = {
        SPEC: spec_yaml,
        OVERRIDES: json.dumps(overrides or [], indent=2),
        RUN_JSON: json.dumps({**info, "versions": library_versions(), "argv": sys.argv},
                               indent=2),
    }
    for name, text in files.items():
        try:
            (run_dir / name).write_text(text)
        except OSError as err:
            raise write_error(run_dir / name, err) from None
