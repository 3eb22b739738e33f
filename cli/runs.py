"""``flowspec runs``: the run directories, their status, progress and best metric.

Reads only ``status.json`` files and checkpoint headers (no torch), so it is instant.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from flowspec_cli.common import console, print_table, user_errors


def register(app: typer.Typer) -> None:
    @app.command("runs")
    @user_errors
    def runs(
        name: str = typer.Argument(None, help="A spec name (runs/<name>), or a folder of runs."),
        out: Path = typer.Option(Path("runs"), "--out", help="Root of run directories."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list (a flag; takes "
                                                           "no value)."),
    ) -> None:
        """List runs: data, status (running/finished/interrupted/diverged), step, best
        metric, time."""
        from flowspec.errors import FlowspecError
        from flowspec.registry import did_you_mean
        from flowspec.run.listing import format_duration, list_runs

        if name is not None and Path(name).is_dir():
            found = list_runs(Path(name))
        else:
            found = list_runs(out, name)
            if name is not None and not found:
                names = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.is_dir() \
                    else []
                sug = did_you_mean(name, names)
                raise FlowspecError(
                    f"no runs named '{name}' under {out}",
                    hint=f"did you mean '{sug[0]}'?" if sug else
                    ("runs: " + ", ".join(names) if names else "train first: flowspec train "
                                                                "SPEC"))
        if as_json:
            print(json.dumps([r.to_json() for r in found], indent=2))
            return
        if not found:
            console.print(f"no runs under {out}")
            return
        rows = []
        for r in found:
            best = r.best or {}
            best_text = (f"{best.get('metric')} {best['value']:.6g} @ {best.get('step')}"
                         + (f" (nfe {best['nfe']:.0f})" if best.get("nfe") is not None else "")
                         if best.get("value") is not None else
                         "no best (no val split)" if r.has_last and r.status == "finished"
                         else "no best yet")
            started = (time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started))
                       if r.started else "")
            rows.append([r.name, r.path.name, r.data or "", r.status, r.progress(), best_text,
                         started,
                         format_duration(r.elapsed_s) if r.elapsed_s is not None else "",
                         str(r.path)])
        print_table(["name", "run", "data", "status", "step", "best", "started", "time", "path"],
                    rows)
