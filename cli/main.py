"""The ``flowspec`` command: thin wrappers that parse, call the library, print with rich.

Imports of torch and the registries happen inside the commands that need them, so
``flowspec --help``, ``--version`` and ``runs`` start in a fraction of a second
(``benchmarks/cli_startup.py`` measures it); ``schema`` and ``nodes`` replay their
output from a cache keyed on the installed code (:mod:`flowspec_cli.cache`).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.tree import Tree

from flowspec_cli import experiment, runs
from flowspec_cli.cache import cached_output
from flowspec_cli.common import (
    SetOption,
    WhichOption,
    console,
    is_tty,
    unknown_catalogue_name,
    user_errors,
)

app = typer.Typer(
    name="flowspec",
    help="Declarative normalizing flows: validate, inspect, train, evaluate and sample specs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: fetch and describe.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _flags_show_no_value_type() -> None:
    """Typer's help prints ``--json <bool>`` for flags, which reads as if they took a
    value; they take none (``--json``, not ``--json true``): show no type for them."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - another typer layout: leave its help alone
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_flowspec", False):  # pragma: no cover
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display_type_rich._flowspec = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_value_type()


def _version(value: bool) -> None:
    if value:
        from flowspec import __version__

        print(f"flowspec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Declarative normalizing flows: validate, inspect, train, evaluate and sample specs."""


def _load_spec(spec: Path, sets: list[str] | None, quick: bool = False):
    from flowspec.spec import load_spec

    return load_spec(spec, sets or [], quick=quick)


@app.command()
@user_errors
def validate(specs: list[Path] = typer.Argument(..., help="Spec files."),
             set_: list[str] = SetOption) -> None:
    """Check specs against the schema, the graph rules and static shapes."""
    from flowspec.errors import FlowspecError
    from flowspec_cli.common import report_error

    failed = 0
    for path in specs:
        try:
            spec = _load_spec(path, set_)
        except FlowspecError as err:
            report_error(err)
            failed += 1
            continue
        console.print(f"[green]ok[/] {path} ({spec.name}: {len(spec.graph.nodes)} nodes, "
                      f"{len(spec.graph.latents)} latent(s))")
    if failed:
        raise typer.Exit(2)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _params_text(params: dict) -> str:
    text = ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())
    return text if len(text) <= 60 else text[:57] + "..."


@app.command()
@user_errors
def show(spec: Path, set_: list[str] = SetOption,
         tree: bool = typer.Option(False, "--tree", help="A tree instead of a table."),
         resolved: bool = typer.Option(False, "--resolved", help="Print the resolved spec "
                                       "(YAML: vars, --set and defaults applied) instead.")
         ) -> None:
    """Show the compiled graph: nodes, shapes, parameters and totals."""
    if resolved:
        print(_load_spec(spec, set_).to_yaml(), end="")
        return
    from flowspec.api import build_flow

    s = _load_spec(spec, set_)
    flow = build_flow(s)
    shapes = flow.port_shapes
    by_id = {n.id: n for n in s.graph.nodes}
    counts = {nid: _count(m) for nid, m in flow.node_items()}
    if tree:
        root = Tree(f"[bold]{s.name}[/] input {list(flow.input_shape)}")
        for nid, _ in flow.node_items():
            n = by_id[nid]
            root.add(f"{nid} [cyan]{n.type}[/] → {[list(shapes[p]) for p in n.outputs]}"
                     f"  {counts[nid]:,} params")
        console.print(root)
    else:
        table = Table(title=f"{s.name}  (input {list(flow.input_shape)})")
        for col in ("node", "type", "in", "out", "params", "settings"):
            table.add_column(col, overflow="fold")
        for nid, _ in flow.node_items():
            n = by_id[nid]
            table.add_row(nid, n.type, " ".join(str(list(shapes[p])) for p in n.inputs),
                          " ".join(str(list(shapes[p])) for p in n.outputs),
                          f"{counts[nid]:,}", _params_text(n.params))
        for lat in s.graph.latents:
            cond = f" | cond {lat.cond}" if lat.cond else ""
            table.add_row(lat.id, f"latent: {lat.prior}", str(list(shapes[lat.input])), "",
                          f"{_count(flow.priors[lat.id.replace('.', '/')]):,}",
                          f"{_params_text(lat.params)}{cond}")
        console.print(table)
    total = sum(p.numel() for p in flow.parameters())
    console.print(f"{len(s.graph.nodes)} nodes, {len(s.graph.latents)} latent(s), "
                  f"{total:,} parameters, {flow.num_dims} dims")


@app.command()
@user_errors
def check(spec: Path = typer.Argument(..., help="Spec, checkpoint or run directory."),
          set_: list[str] = SetOption,
          quick: bool = typer.Option(False, "--quick", help="Apply the spec's quick overrides."),
          max_dims: int = typer.Option(1024, help="Skip Jacobians of nodes with more dims."),
          which: str = WhichOption,
          ) -> None:
    """Verify every node of a flow: round trip and log-det vs autograd, in float64."""
    from flowspec.api import build_flow, is_checkpoint
    from flowspec.check import check_flow

    if is_checkpoint(spec):  # a trained flow is checked as it is
        from flowspec_cli.common import load_flow

        flow, jitter = load_flow(spec, "cpu", which)[0], 0.0
    else:  # an untrained one is perturbed off the identity first
        flow, jitter = build_flow(_load_spec(spec, set_, quick)), 0.1
    progress, done = _check_progress()
    try:
        reports = check_flow(flow, max_dims=max_dims, jitter=jitter, progress=progress)
    finally:
        done()
    table = Table(title="per-node check (float64)")
    for col in ("node", "type", "round trip", "log-det vs autograd", "fwd+inv log-det", "ok"):
        table.add_column(col)
    for r in reports:
        table.add_row(r.node, r.type, f"{r.roundtrip_error:.1e}",
                      "skipped" if r.logdet_error is None else f"{r.logdet_error:.1e}",
                      f"{r.cancel_error:.1e}", "[green]✓[/]" if r.ok else "[red]✗[/]")
    console.print(table)
    bad = [r for r in reports if not r.ok]
    if bad:
        console.print(f"[red]{len(bad)} node(s) failed[/]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(reports)} nodes pass[/]")


def _check_progress():
    """Per-node progress for ``check`` (a Glow spec takes minutes): a transient line on a
    terminal, a plain line per node in a pipe."""
    import time

    if not is_tty():
        def plain(i, n, nid, report):
            if report is not None:
                state = "ok" if report.ok else "FAILED"
                print(f"checked {i}/{n} {nid} ({report.type}): {state}", flush=True)

        return plain, lambda: None
    status = console.status("checking", refresh_per_second=4)
    t0 = time.perf_counter()

    def live(i, n, nid, report):
        if i == 0 and report is None:
            status.start()
        if report is None:
            status.update(f"checking node {i + 1}/{n}: {nid} ({time.perf_counter() - t0:.0f} s)")

    return live, status.stop


@app.command()
@user_errors
@cached_output("schema")
def schema(output: Path = typer.Option(None, "-o", "--output", help="Write to a file.")) -> None:
    """Print the JSON Schema of specs (draft-07), for editors' YAML language servers."""
    from flowspec.spec import spec_schema

    text = json.dumps(spec_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
        console.print(f"wrote {output}")
    else:
        print(text)


@app.command()
@user_errors
@cached_output("nodes")
def nodes(markdown: bool = typer.Option(False, "--markdown", help="Markdown for docs."),
          name: str = typer.Argument(None, help="Show one node's parameters.")) -> None:
    """The catalogue of nodes, conditioner nets and priors."""
    from flowspec.bijectors import NODES
    from flowspec.catalogue import catalogue_markdown, inverse_kind, param_rows
    from flowspec.distributions import PRIORS
    from flowspec.nets import NETS

    if markdown:
        print(catalogue_markdown())
        return
    if name:
        for reg in (NODES, NETS, PRIORS):
            if name in reg:
                entry = reg.get(name)
                console.print(f"[bold]{entry.name}[/] ({reg.kind}) — {entry.doc}")
                table = Table()
                for col in ("parameter", "type", "default", "description"):
                    table.add_column(col)
                for row in param_rows(entry):
                    table.add_row(*[r.replace("\\|", "|") for r in row])
                console.print(table)
                return
        raise unknown_catalogue_name(name)
    for reg, title in ((NODES, "nodes"), (NETS, "conditioner nets"), (PRIORS, "priors")):
        table = Table(title=title)
        table.add_column("name", style="cyan")
        table.add_column("category")
        if reg is NODES:
            table.add_column("inverse")
        table.add_column("what it is", overflow="fold")
        for e in reg:
            cells = [e.name, e.category] + ([inverse_kind(e)] if reg is NODES else []) + [e.doc]
            table.add_row(*cells)
        console.print(table)


experiment.register(app, data_app)
runs.register(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
