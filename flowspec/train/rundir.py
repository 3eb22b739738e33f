"""Run directories: ``<root>/<name>/<time>-<spec hash>``, never overwritten."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any


def spec_hash(spec_yaml: str) -> str:
    return hashlib.sha256(spec_yaml.encode()).hexdigest()[:8]


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
    for i in range(1000):
        candidate = base / (stem if i == 0 else f"{stem}-{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a fresh run directory under {base}")


def write_run_files(run_dir: Path, spec_yaml: str, overrides: Any, info: dict[str, Any]) -> None:
    (run_dir / "spec.yaml").write_text(spec_yaml)
    (run_dir / "overrides.json").write_text(json.dumps(overrides or [], indent=2))
    (run_dir / "run.json").write_text(
        json.dumps({**info, "versions": library_versions(), "argv": sys.argv}, indent=2))
