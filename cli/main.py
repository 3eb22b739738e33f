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
from rich import box
from rich.table import Table
from rich.tree import Tree

from flowspec_cli import experiment, export_cmd, runs
from flowspec_cli.cache import cached_output
from flowspec_cli.common import (
    DataDirOption,
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


def _shapes(shapes, sep: str = " ") -> str:
    return sep.join(str(list(s)) for s in shapes)


def _dims(shapes) -> str:
    """Compact shapes for the table: ``1×32×32``, several joined by ``+``."""
    return " + ".join("×".join(str(d) for d in s) for s in shapes)


def _entry_text(entry, outline):
    """(id, type, in, out, params, settings) of one outline entry, as rich Text cells."""
    from rich.text import Text

    if isinstance(entry, outline.Item):
        kind = f"latent: {entry.type}" if entry.latent else entry.type
        settings = ", ".join(t for t in (outline.params_text(entry.params),
                                         f"cond={entry.cond}" if entry.cond else "") if t)
        return (entry.id, kind, entry.inputs, entry.outputs, f"{entry.n_params:,}",
                Text(settings))
    ins, outs = outline.boundary(entry)
    each = {m.n_params for m in entry.members}
    count = (f"{entry.n_params:,}" + (f"\n= {entry.count} × {each.pop():,}"
                                      if len(each) == 1 and entry.n_params else ""))
    lines = Text()
    for k, (rel, kind, settings) in enumerate(outline.fold_members(entry)):
        lines.append(("\n" if k else "") + rel, style="dim")
        lines.append(f" {kind}" if not rel.endswith(kind) else "")
        lines.append(f": {settings}" if settings else "")
    return entry.key, entry.label, ins, outs, count, lines


def _tree(parent, entries, outline, expand: bool) -> None:
    """Add outline entries under a rich Tree node, groups as branches."""
    from rich.text import Text

    for entry in entries:
        while (isinstance(entry, outline.Group) and len(entry.children) == 1
               and isinstance(entry.children[0], outline.Group)):  # no empty levels
            entry = entry.children[0]
        if isinstance(entry, outline.Group):  # a repeat that folds whole: shown as its fold
            inner = outline.runs(entry, expand)
            entry = inner[0] if len(inner) == 1 and isinstance(inner[0], outline.Fold) else entry
        item = outline.only_item(entry)
        if item is not None:
            iid, kind, _, _, count, settings = _entry_text(item, outline)
            ins, outs = _shapes(item.inputs), _shapes(item.outputs) or "latent"
            label = Text.assemble(iid, " ", (kind, "cyan"), f" {ins} → {outs}  {count} params")
            if settings.plain:
                label.append("  ")
                label.append(settings)
            parent.add(label)
        elif isinstance(entry, outline.Fold):
            ins, outs = (_shapes(s) for s in outline.boundary(entry))
            key, label, _, _, count, _ = _entry_text(entry, outline)
            total, _, each = count.partition("\n")
            branch = parent.add(Text.assemble(
                key, " ", (label, "bold cyan"), f" {ins} → {outs}  {total} params",
                f" ({each})" if each else "", (" folded, --expand shows all", "dim")))
            for rel, kind, settings in outline.fold_members(entry):
                branch.add(Text.assemble((rel, "dim"), f" {kind}" if not rel.endswith(kind)
                                         else "", f": {settings}" if settings else ""))
        else:
            ins, outs = outline.boundary(entry)
            branch = parent.add(Text.assemble(
                entry.key, " ", (entry.label, "bold"), " " if entry.label else "",
                f"{_shapes(ins)} → {_shapes(outs)}  {entry.n_params:,} params"))
            _tree(branch, outline.runs(entry, expand), outline, expand)


@app.command()
@user_errors
def show(spec: Path, set_: list[str] = SetOption,
         tree: bool = typer.Option(False, "--tree", help="Nested as the spec is written."),
         expand: bool = typer.Option(False, "--expand", help="Every node: no folding of "
                                     "repeated structure."),
         resolved: bool = typer.Option(False, "--resolved", help="Print the resolved spec "
                                       "(YAML: vars, --set and defaults applied) instead.")
         ) -> None:
    """Show the compiled graph: nodes, shapes, parameters and totals, repeats folded."""
    if resolved:  # as train --print-spec: only the run length in effect
        from flowspec.spec.source import dump_yaml
        from flowspec.train.request import length_in_effect

        print(dump_yaml(length_in_effect(_load_spec(spec, set_).document)), end="")
        return
    from rich.text import Text

    from flowspec import outline
    from flowspec.api import build_flow

    s = _load_spec(spec, set_)
    flow = build_flow(s)
    root = outline.build_outline(
        s.graph, flow.port_shapes, {nid: _count(m) for nid, m in flow.node_items()},
        {lat.id: _count(flow.priors[lat.id.replace(".", "/")]) for lat in s.graph.latents},
        order=[nid for nid, _ in flow.node_items()])
    ctx = s.graph.context
    cond = ("" if ctx is None else f", context: {ctx.num_classes} classes"
            if ctx.num_classes is not None else f", context {list(ctx.shape or ())}")
    title = f"{s.name}  (input {list(flow.input_shape)}{cond})"
    if tree:
        top = Tree(Text.assemble((s.name, "bold"), f" input {list(flow.input_shape)}{cond}"))
        _tree(top, outline.runs(root, expand), outline, expand)
        console.print(top)
    elif not is_tty():  # a pipe: one plain row per node, full width, never wrapped
        from flowspec_cli.common import print_table

        rows = []
        for row in outline.flat_rows(root, expand):
            key, kind, ins, outs, count, settings = _entry_text(row, outline)
            rows.append([key, kind, _dims(ins), _dims(outs) or "latent",
                         count.replace("\n", " "), settings.plain.replace("\n", "; ")])
        print_table(["node", "type", "in", "out", "params", "settings"], rows, title=title)
    else:
        rows = outline.flat_rows(root, expand)
        longest_id = max(len(r.key if isinstance(r, outline.Fold) else r.id) for r in rows)
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("node / type", overflow="fold", min_width=min(longest_id, 32))
        table.add_column("in → out")
        table.add_column("params", justify="right")
        table.add_column("settings", overflow="fold")
        for row in rows:
            key, kind, ins, outs, count, settings = _entry_text(row, outline)
            style = "bold cyan" if isinstance(row, outline.Fold) else "cyan"
            table.add_row(Text.assemble(key, "\n", (kind, style)),
                          Text(f"{_dims(ins)} →\n{_dims(outs) or 'latent'}"), Text(count),
                          settings)
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
          data_dir: Path = DataDirOption,
          ) -> None:
    """Verify every node of a flow: round trip and log-det vs autograd, in float64. A
    conditional flow is checked at contexts of its training data (random ones without
    data), said before the table."""
    from flowspec.api import build_flow, is_checkpoint
    from flowspec.check import check_flow

    if is_checkpoint(spec):  # a trained flow is checked as it is
        from flowspec_cli.common import load_flow

        flow, jitter = load_flow(spec, "cpu", which)[0], 0.0
    else:  # an untrained one is perturbed off the identity first
        flow, jitter = build_flow(_load_spec(spec, set_, quick)), 0.1
    progress, done = _check_progress()
    notes: list[str] = []
    try:
        reports = check_flow(flow, max_dims=max_dims, jitter=jitter, progress=progress,
                             notes=notes, data_dir=data_dir)
    finally:
        done()
    for line in notes:
        console.print(line, highlight=False, markup=False)
    from flowspec_cli.common import print_table

    print_table(["node", "type", "round trip", "log-det vs autograd", "fwd+inv log-det", "ok"],
                [[r.node, r.type, f"{r.roundtrip_error:.1e}",
                  "skipped" if r.logdet_error is None else f"{r.logdet_error:.1e}",
                  f"{r.cancel_error:.1e}", "✓" if r.ok else "✗ FAILED"] for r in reports],
                title="per-node check (float64)")
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
def schema(output: Path = typer.Option(None, "-o", "--output", help="Write to a file.")) -> None:
    """Print the JSON Schema of specs (draft-07), for editors' YAML language servers."""
    if output is None:
        _print_schema()
        return
    from flowspec.oserrors import write_error
    from flowspec.spec import spec_schema

    try:  # never from the cache: the file must be written every time
        output.write_text(json.dumps(spec_schema(), indent=2) + "\n")
    except OSError as err:
        raise write_error(output, err) from None
    console.print(f"wrote {output}", highlight=False, markup=False)


@cached_output("schema")
def _print_schema() -> None:
    from flowspec.spec import spec_schema

    print(json.dumps(spec_schema(), indent=2))


@app.command()
@user_errors
@cached_output("nodes")
def nodes(markdown: bool = typer.Option(False, "--markdown", help="Markdown for docs."),
          name: str = typer.Argument(None, help="Show one entry's parameters (any registry)."),
          ) -> None:
    """The catalogue: nodes, conditioner nets, priors, datasets, preprocessing, energies."""
    from rich.text import Text

    from flowspec.catalogue import (
        catalogue_markdown,
        doc_text,
        find,
        find_train_option,
        inverse_kind,
        param_rows,
        public,
        registries,
        schema_rows,
        train_options,
    )

    if markdown:
        print(catalogue_markdown())
        return
    if name:  # every registry that has it (a name may be both a node and a prep step)
        found = find(name)
        options = find_train_option(name)
        if not found and not options:
            raise unknown_catalogue_name(name)
        for option in options:  # an optimizer, a schedule, a train key
            console.print(Text.assemble((option.name, "bold"), f" ({option.kind}) — ")
                          + doc_text(option.doc))
            rows = schema_rows(option.schema)
            if rows:
                from flowspec_cli.common import print_table

                print_table(["parameter", "type", "default", "description"],
                            [[p, t.replace("\\|", "|"), d, doc_text(desc).plain]
                             for p, t, d, desc in rows])
        for reg, entry in found:
            head = Text.assemble((entry.name, "bold"), f" ({reg.kind}"
                                 + (f", {entry.category}" if entry.category else "") + ") — ")
            console.print(head + doc_text(entry.doc))
            if reg.kind == "node":
                console.print(f"inverse: {inverse_kind(entry)}")
            rows = param_rows(entry)
            if not rows:
                console.print("no parameters")
                continue
            if not is_tty():  # a pipe: plain rows, full width
                from flowspec_cli.common import print_table

                print_table(["parameter", "type", "default", "description"],
                            [[p, t.replace("\\|", "|"), d, doc_text(desc).plain]
                             for p, t, d, desc in rows])
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
        if not is_tty():  # a pipe: plain rows, full width
            from flowspec_cli.common import print_table

            print_table(["name", "category"] + (["inverse"] if reg.kind == "node" else [])
                        + ["what it is"],
                        [[e.name, e.category or ""]
                         + ([inverse_kind(e)] if reg.kind == "node" else [])
                         + [doc_text(e.doc).plain] for e in public(reg)], title=title)
            print()
            continue
        table = Table(title=title)
        table.add_column("name", style="cyan", no_wrap=True)
        table.add_column("category", max_width=14)
        if reg.kind == "node":
            table.add_column("inverse", max_width=12)
        table.add_column("what it is", overflow="fold")
        for e in public(reg):
            extra = [Text(inverse_kind(e))] if reg.kind == "node" else []
            table.add_row(Text(e.name), Text(e.category), *extra, doc_text(e.doc))
        console.print(table)
    from flowspec_cli.common import print_table

    print_table(["name", "what", "description"],
                [[o.name, o.kind, doc_text(o.doc).plain] for o in train_options()
                 if o.kind != "train key"],
                title="Training options (train: optimizer, schedule; every train key: "
                      "flowspec nodes KEY)")
    console.print("details: flowspec nodes NAME · Markdown: flowspec nodes --markdown")


experiment.register(app, data_app)
runs.register(app)
export_cmd.register(app)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Command help as paragraphs, each one line: rich wraps them at the terminal's width.
    Typer keeps a docstring's own line breaks after its first paragraph, which cut
    phrases in the middle of a line on any terminal wider or narrower than the source."""
    import inspect

    for info in typer_app.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        paragraphs = [" ".join(line.strip() for line in para.splitlines())
                      for para in text.strip().split("\n\n")]
        info.help = "\n\n".join(p for p in paragraphs if p)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
