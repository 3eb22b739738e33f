"""The ``flowspec`` command: thin wrappers that parse, call the library, print with rich."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.tree import Tree

from flowspec_cli import experiment
from flowspec_cli.common import SetOption, console, user_errors

app = typer.Typer(
    name="flowspec",
    help="Declarative normalizing flows: validate, inspect, train, evaluate and sample specs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: fetch and describe.", no_args_is_help=True)
app.add_typer(data_app, name="data")


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
         tree: bool = typer.Option(False, "--tree", help="A tree instead of a table.")) -> None:
    """Show the compiled graph: nodes, shapes, parameters and totals."""
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
          ) -> None:
    """Verify every node of a flow: round trip and log-det vs autograd, in float64."""
    from flowspec.api import build_flow, is_checkpoint
    from flowspec.check import check_flow

    if is_checkpoint(spec):  # a trained flow is checked as it is
        import flowspec

        flow, jitter = flowspec.load(spec), 0.0
    else:  # an untrained one is perturbed off the identity first
        flow, jitter = build_flow(_load_spec(spec, set_, quick)), 0.1
    reports = check_flow(flow, max_dims=max_dims, jitter=jitter)
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


@app.command()
@user_errors
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
def nodes(markdown: bool = typer.Option(False, "--markdown", help="Markdown for docs."),
          name: str = typer.Argument(None, help="Show one entry's parameters (any registry)."),
          ) -> None:
    """The catalogue: nodes, conditioner nets, priors, datasets, preprocessing, energies."""
    from rich.text import Text

    from flowspec.catalogue import (
        catalogue_markdown,
        doc_text,
        find,
        inverse_kind,
        param_rows,
        public,
        registries,
    )

    if markdown:
        print(catalogue_markdown())
        return
    if name:  # every registry that has it (a name may be both a node and a prep step)
        for reg, entry in find(name):
            head = Text.assemble((entry.name, "bold"), f" ({reg.kind}"
                                 + (f", {entry.category}" if entry.category else "") + ") — ")
            console.print(head + doc_text(entry.doc))
            if reg.kind == "node":
                console.print(f"inverse: {inverse_kind(entry)}")
            rows = param_rows(entry)
            if not rows:
                console.print("no parameters")
                continue
            table = Table()
            for col in ("parameter", "type", "default", "description"):
                table.add_column(col, overflow="fold")
            for pname, ptype, default, desc in rows:
                table.add_row(Text(pname, style="cyan"), Text(ptype.replace("\\|", "|")),
                              Text(default), doc_text(desc))
            console.print(table)
        return
    for reg, title in registries():
        table = Table(title=title)
        table.add_column("name", style="cyan", no_wrap=True)
        table.add_column("category")
        if reg.kind == "node":
            table.add_column("inverse")
        table.add_column("what it is", overflow="fold")
        for e in public(reg):
            extra = [Text(inverse_kind(e))] if reg.kind == "node" else []
            table.add_row(Text(e.name), Text(e.category), *extra, doc_text(e.doc))
        console.print(table)
    console.print("details: flowspec nodes NAME · Markdown: flowspec nodes --markdown")


experiment.register(app, data_app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
