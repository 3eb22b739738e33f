"""``flowspec export``: a trained flow as ONNX or torch.export programs, checked."""

from __future__ import annotations

from pathlib import Path

import typer

from flowspec_cli.common import (
    CkptArgument,
    DataDirOption,
    UntrainedOption,
    WhichOption,
    console,
    load_flow,
    note,
    print_table,
    user_errors,
    warn,
)


def _blocker_lines(skipped) -> list[str]:
    """One line per (program, node type, reason), naming the node ids (a few, then a count)."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for b in skipped:
        groups.setdefault((b.program, b.kind, b.reason), []).append(b.where)
    lines = []
    for (program, kind, reason), ids in groups.items():
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        lines.append(f"{program} cannot export: {kind} ({shown}): {reason}")
    return lines


def register(app: typer.Typer) -> None:
    @app.command("export")
    @user_errors
    def export(
        ckpt: Path = CkptArgument,
        fmt: str = typer.Option("onnx", "--format", help="onnx | torch-export"),
        what: str = typer.Option("both", "--what", help="log_prob | sample | both"),
        output: Path = typer.Option(None, "-o", "--output",
                                    help="Directory (default: RUN/export/<format>)."),
        n: int = typer.Option(256, "-n", min=1, help="Held-out rows the artifact is checked on."),
        tolerance: float = typer.Option(
            1e-4, "--tolerance", min=0.0,
            help="Largest accepted |artifact - eager|, relative to max(1, |eager|)."),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        data_dir: Path = DataDirOption,
    ) -> None:
        """Write log_prob(x[, context]) and sample(noise[, context]) as self-contained
        programs with a dynamic batch size, and check them against the eager flow."""
        from flowspec.errors import FlowspecError
        from flowspec.export import FORMATS, WHAT, export_flow

        if fmt not in FORMATS:
            raise FlowspecError(f"--format {fmt}: unknown format", hint="use onnx or torch-export")
        if what not in WHAT:
            raise FlowspecError(f"--what {what}: unknown program",
                                hint="use log_prob, sample or both")
        flow, resolved = load_flow(ckpt, "cpu", which, untrained)
        if output is None:
            base = (resolved.run_dir or resolved.checkpoint.parent) if resolved else Path(".")
            output = base / "export" / fmt
        report = export_flow(flow, output, fmt=fmt, what=what, data_dir=data_dir, n_check=n)
        lines = _blocker_lines(report.skipped)
        if not report.programs:
            raise FlowspecError("nothing could be exported: " + "; ".join(lines))
        for line in lines:
            warn(line)
        note(f"checked on {report.inputs_source}")
        rows = [[p.program, p.path.name, p.n, p.max_abs_diff, p.scale, p.rel_diff]
                for p in report.programs]
        print_table(["program", "file", "rows", "max |Δ|", "max |eager|", "relative"], rows,
                    title=f"{fmt} export vs eager (log_prob: Δ log p; sample: Δ x)")
        console.print(f"wrote {report.directory}", highlight=False, markup=False)
        bad = [p.program for p in report.programs if not p.rel_diff <= tolerance]
        if bad:
            raise FlowspecError(f"the exported {', '.join(bad)} differs from the eager flow by "
                                f"more than --tolerance {tolerance:g} (files kept for inspection)")
