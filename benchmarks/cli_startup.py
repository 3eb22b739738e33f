"""How long `flowspec` commands take to start: subprocess timings, interleaved rounds.

Each round runs every command once, in the same order, as a fresh process (what a user
types); the table gives the median wall time and the median CPU time (user + sys of the
child, less sensitive to a busy machine) over the rounds. ``import torch`` alone is the
reference: before the lazy imports, every command (``--help`` included) paid it.

``schema`` and ``nodes`` are timed twice: ``cold`` with an empty output cache (they import
the registries, hence torch) and ``warm`` (replayed from the cache of the installed code).

    python benchmarks/cli_startup.py [--rounds 7] [--before /path/to/older/checkout]

``--before`` also times ``--help``, ``schema`` and ``nodes`` of another checkout of the
repository (its ``flowspec/`` and ``cli/`` put first on ``PYTHONPATH``), e.g. the main
branch before the lazy imports.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "flowspec_cli.main"]


def commands(tmp: Path, before: Path | None = None) -> list[tuple[str, list[str], bool]]:
    """(label, argv, clear the cache first)."""
    spec = str(ROOT / "specs" / "realnvp_moons.yaml")
    older = []
    if before is not None:
        shim = tmp / "before"
        shim.mkdir()
        (shim / "flowspec").symlink_to(before.resolve() / "flowspec")
        (shim / "flowspec_cli").symlink_to(before.resolve() / "cli")
        code = (f"import sys; sys.path.insert(0, {str(shim)!r}); "
                "from flowspec_cli.main import app; app()")
        old = [sys.executable, "-c", code]
        older = [("before: flowspec --help", old + ["--help"], False),
                 ("before: flowspec schema", old + ["schema"], False),
                 ("before: flowspec nodes", old + ["nodes"], False)]
    return older + [
        ("python -c 'import torch' (reference)", [sys.executable, "-c", "import torch"], False),
        ("flowspec --help", CLI + ["--help"], False),
        ("flowspec --version", CLI + ["--version"], False),
        ("flowspec runs (empty)", CLI + ["runs", "--out", str(tmp / "runs")], False),
        ("flowspec train --help", CLI + ["train", "--help"], False),
        ("flowspec schema (cold cache)", CLI + ["schema"], True),
        ("flowspec schema (warm cache)", CLI + ["schema"], False),
        ("flowspec nodes (cold cache)", CLI + ["nodes"], True),
        ("flowspec nodes (warm cache)", CLI + ["nodes"], False),
        ("flowspec validate realnvp_moons", CLI + ["validate", spec], False),
    ]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout to compare with (e.g. ../flowspec-before)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flowspec-startup-"))
    cache = tmp / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1",
           "COLUMNS": "100"}
    cmds = commands(tmp, args.before)
    walls: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
    for _label, argv, _ in cmds:  # warm the OS file cache once; not timed
        run_once(argv, env)
    for _ in range(args.rounds):
        for label, argv, clear in cmds:
            if clear:
                shutil.rmtree(cache, ignore_errors=True)
            wall, cpu = run_once(argv, env)
            walls[label].append(wall)
            cpus[label].append(cpu)
    ref = statistics.median(cpus["python -c 'import torch' (reference)"])
    print(f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| command | wall (median) | CPU (median) | CPU / import torch |")
    print("| --- | --- | --- | --- |")
    for label, _, _ in cmds:
        w, c = statistics.median(walls[label]), statistics.median(cpus[label])
        print(f"| `{label}` | {w:.2f} s | {c:.2f} s | {c / ref:.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
