"""Experiment commands: train (and sweeps), eval, sample, trace, interpolate, manipulate, data.

Commands that use a trained flow say which checkpoint they used (path, step,
best/last), refuse a spec file unless ``--untrained`` is given, and write their
pictures into the run directory under a name that says what they are, never over
an existing file unless ``-o`` names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flowspec_cli.common import (
    FIGURE_SUFFIXES,
    IMAGE_SUFFIXES,
    CkptArgument,
    DataDirOption,
    DeviceOption,
    SetOption,
    UntrainedOption,
    WhichOption,
    console,
    is_tty,
    load_flow,
    note,
    num,
    output_for,
    parse_floats,
    print_table,
    user_errors,
    warn,
    wrote,
)


def _reporter():
    from flowspec.train.report import PlainReporter

    if is_tty():
        from flowspec_cli.progress import RichReporter

        return RichReporter(console)
    return PlainReporter()


def _tag(value: float) -> str:
    return f"{value:g}"


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def train(
        spec: Path = typer.Argument(None, help="Spec file (omit with --resume)."),
        set_: list[str] = SetOption,
        out: Path = typer.Option(Path("runs"), "--out", help="Root of run directories."),
        device: str = DeviceOption,
        data_dir: Path = DataDirOption,
        resume: Path = typer.Option(
            None, "--resume", help="Continue a run: its directory, or runs/<name> (its newest "
                                   "unfinished run; a bare NAME is looked up under --out). "
                                   "--set may change its length, lr, grad_clip and "
                                   "cadences."),
        seed: int = typer.Option(None, "--seed", help="Override train.seed (--set "
                                 "train.seed=N)."),
        quick: bool = typer.Option(False, "--quick", help="Apply the spec's quick overrides."),
        print_spec: bool = typer.Option(False, "--print-spec",
                                        help="Print the resolved spec (YAML) and exit."),
        sweep: list[str] = typer.Option(
            None, "--sweep", metavar="PATH=V1,V2",
            help="Train once per value: --sweep vars.K=2,8,32 (repeatable: every "
                 "combination), then compare."),
        nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this "
                                  "machine (one GPU each on CUDA); train.batch_size is global."),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the training "
                                      "step (sets train.compile)."),
        data: Path = typer.Option(None, "--data", help="Train on this .csv/.npy/.npz/"
                                  ".safetensors file instead of the spec's dataset."),
        name: str = typer.Option(None, "--name", help="Name the run (<out>/<name>/...; "
                                 "default: the spec's name, or the --data file's)."),
    ) -> None:
        """Train a spec (its train.objective: maximum likelihood, reverse KL, ...);
        checkpoints into a run directory.

        Every flag is sugar for --set (--seed N: train.seed=N, --compile: train.compile=true,
        --data FILE: data.dataset reads FILE, and the run is named after FILE; --name N:
        name=N). Several processes: --nproc N here, or
        torchrun --nproc-per-node N (--nnodes for several machines) running `flowspec train`."""
        from flowspec.errors import FlowspecError
        from flowspec.train import make_request
        from flowspec.train.request import run_name_for_data

        if resume is not None:
            given = [what for flag, what in ((spec is not None, f"SPEC ({spec})"),
                                             (seed is not None, "--seed"), (quick, "--quick"),
                                             (bool(sweep), "--sweep"),
                                             (data is not None, "--data"),
                                             (name is not None, "--name")) if flag]
            if given:
                raise FlowspecError(
                    f"--resume continues a run with its own spec, data and seed; "
                    f"{', '.join(given)} cannot be used with it",
                    hint="change what a resume may change with --set (train.steps, "
                         "train.optimizer.<name>.lr, train.grad_clip, cadences), or start a "
                         "new run from the spec")
        if sweep and print_spec:
            raise FlowspecError("--print-spec prints one spec; drop --sweep")
        named = any(s.partition("=")[0].strip() == "name" for s in set_ or [])
        if name is None and data is not None and not named:
            name = run_name_for_data(data)
            note(f"run name: {name} (after the data file; --name sets another)")
        request = make_request(spec, overrides=set_ or [], quick=quick, data=data, seed=seed,
                               torch_compile=compile_, name=name, resume=resume, out=out,
                               data_dir=data_dir, device=device, nproc=nproc)
        for line in request.notes:
            note(line)
        if print_spec:
            print(request.resolved_spec_yaml(), end="")
            return
        if sweep:
            _sweep(request, sweep)
            return
        from flowspec.train import train as run

        result = run(request, make_reporter=_reporter)
        if result.rank != 0:  # under torchrun, rank 0 speaks for the run
            return
        _done(result)

    @app.command("eval")
    @user_errors
    def evaluate(
        ckpt: Path = CkptArgument,
        data_dir: Path = DataDirOption,
        split: str = typer.Option(None, help="test | val | train (default: test)."),
        device: str = DeviceOption,
        batch_size: int = typer.Option(500, min=1, help="Evaluation batch size."),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        data: Path = typer.Option(None, "--data", help="Score the rows of this file (the "
                                  "training file's columns and context) instead of a split."),
        per_row: Path = typer.Option(None, "--per-row", help="With --data: write one "
                                     "log-density per row (nats) to this .csv."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (a flag; "
                                                           "takes no value)."),
    ) -> None:
        """Held-out negative log-likelihood in nats and bits/dim (reverse KL for energy
        runs); with --data, the log-density of every row of a new file."""
        from flowspec.errors import FlowspecError

        if split is not None and split not in ("test", "val", "train"):
            raise FlowspecError(f"--split must be test, val or train, got '{split}'")
        if data is not None and split is not None:
            raise FlowspecError("--data scores a file; --split picks a split of the run's "
                                "own data: give one of them")
        if per_row is not None and data is None:
            raise FlowspecError("--per-row writes the scores of --data FILE",
                                hint="add --data new.csv")
        if per_row is not None:
            from flowspec_cli.common import check_output

            check_output(per_row, (".csv",), "--per-row")
        flow, resolved = load_flow(ckpt, device, which, untrained, quiet=as_json)
        info = ({"path": str(resolved.checkpoint), "which": resolved.which,
                 "step": resolved.step, "notes": resolved.notes}
                if resolved is not None else {"untrained": True})
        if data is not None:
            _score(flow, data, per_row, as_json, info, data_dir, batch_size)
            return
        split = split or "test"
        from flowspec.objectives import objective_class

        metrics = objective_class(flow.spec).evaluate_trained(
            flow, flow.spec, split=split, data_dir=data_dir, batch_size=batch_size)
        from flowspec.check import logdet_methods

        methods = logdet_methods(flow)  # exact or an estimate, per free-form node
        if as_json:
            print(json.dumps({**metrics, "split": split, "checkpoint": info,
                              **({"logdet": methods} if methods else {})}))
        else:
            for k, v in metrics.items():
                console.print(f"{k:>20}: {num(v)}", highlight=False)
            groups: dict[str, list[str]] = {}
            for nid, how in methods.items():
                groups.setdefault(how, []).append(nid)
            for how, ids in groups.items():
                where = ids[0] if len(ids) == 1 else f"{len(ids)} nodes, {ids[0]} ..."
                console.print(f"{'log-det':>20}: {how} ({where})", highlight=False)

    @app.command()
    @user_errors
    def sample(
        ckpt: Path = CkptArgument,
        n: int = typer.Option(None, "-n", min=1, help="Samples per temperature (default: the "
                              "spec's sample.n; 8 per row for an image --temps grid)."),
        temp: float = typer.Option(None, "--temp", min=0.0,
                                   help="Temperature (default: the spec's sample.temperature)."),
        temps: str = typer.Option(None, "--temps", help="0,0.5,0.7,1: one image row or "
                                  "2-D panel per temperature."),
        seed: int = typer.Option(0, "--seed"),
        output: Path = typer.Option(
            None, "-o", "--output",
            help="Output file (default: RUN/samples/sample-T<temp>-seed<seed>.png, never "
                 "overwriting)."),
        npy: bool = typer.Option(False, "--npy", help="Save raw arrays (.npy) instead."),
        label: int = typer.Option(None, "--class", help="Class for conditional flows."),
        context: str = typer.Option(None, "--context",
                                    help="Context vector for conditional flows: 0.5,1.0"),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        data_dir: Path = DataDirOption,
        device: str = DeviceOption,
    ) -> None:
        """Draw samples: an image grid, a 2-D scatter with density, raw arrays, or a data
        file (-o samples.csv / .npy / .npz)."""
        from flowspec.errors import FlowspecError

        if temp is not None and temps is not None:
            raise FlowspecError("give --temp or --temps, not both")
        temperatures = (parse_floats(temps, "--temps", minimum=0.0) if temps is not None else
                        ([temp] if temp is not None else None))
        flow, resolved = load_flow(ckpt, device, which, untrained)
        temps_used = temperatures or [flow.spec.sample["temperature"]]
        from flowspec.data.export import EXPORT_SUFFIXES, parse_context

        if npy:
            allowed: tuple[str, ...] = (".npy",)
        else:
            allowed = (IMAGE_SUFFIXES if len(flow.input_shape) == 3 else FIGURE_SUFFIXES) \
                + EXPORT_SUFFIXES
        name = ("sample" + ("-untrained" if resolved is None else "")
                + f"-T{'-'.join(_tag(t) for t in temps_used)}"
                + (f"-class{label}" if label is not None else "") + f"-seed{seed}" + allowed[0])
        from flowspec.run.layout import SAMPLES_DIR

        path, replaced = output_for(output, resolved, SAMPLES_DIR, name, allowed)
        import torch

        from flowspec.sampling import sample_figure
        from flowspec.viz.notes import collect_warnings

        torch.manual_seed(seed)
        with collect_warnings() as notes:
            written = sample_figure(flow, path, n=n, temperatures=temperatures,
                                    data_dir=data_dir, label=label, npy=npy,
                                    context=parse_context(flow, context))
        for line in notes:
            warn(line)
        wrote(written, replaced)

    @app.command()
    @user_errors
    def trace(
        ckpt: Path = typer.Argument(..., help="Checkpoint, run directory or runs/<name> of a "
                                              "2-D flow."),
        output: Path = typer.Option(
            None, "-o", "--output",
            help="Output file (default: RUN/trace/trace-seed<seed>.png, never overwriting)."),
        n: int = typer.Option(2000, "-n", min=1, help="Points per row."),
        seed: int = typer.Option(0, "--seed"),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        data_dir: Path = DataDirOption,
    ) -> None:
        """Per-node panels of test points (data → latent) and samples (latent → data)."""
        flow, resolved = load_flow(ckpt, "cpu", which, untrained)
        name = "trace" + ("-untrained" if resolved is None else "") + f"-seed{seed}.png"
        from flowspec.run.layout import TRACE_DIR

        path, replaced = output_for(output, resolved, TRACE_DIR, name, FIGURE_SUFFIXES)
        import torch

        from flowspec.objectives import objective_class
        from flowspec.sampling import data_column_names
        from flowspec.viz.notes import collect_warnings
        from flowspec.viz.trace import plot_trace

        torch.manual_seed(seed)
        x = objective_class(flow.spec).reference_points(flow, flow.spec, n, data_dir)
        names = data_column_names(flow, data_dir)
        with collect_warnings() as notes:
            written = plot_trace(flow, x, path, n_samples=n, names=names)
        for line in notes:
            warn(line)
        wrote(written, replaced)

    @app.command()
    @user_errors
    def interpolate(
        ckpt: Path = CkptArgument,
        pairs: int = typer.Option(4, min=1, help="Rows: pairs of test images."),
        steps: int = typer.Option(8, min=2, help="Images per row (both ends included)."),
        seed: int = typer.Option(0, "--seed"),
        output: Path = typer.Option(None, "-o", "--output", help="Output file (default: "
                                    "RUN/interpolations/..., never overwriting)."),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        data_dir: Path = DataDirOption,
        device: str = DeviceOption,
    ) -> None:
        """Linear interpolation in latent space between pairs of test images."""
        from flowspec.errors import DataError

        flow, resolved = load_flow(ckpt, device, which, untrained)
        from flowspec.data import open_spec_dataset

        source, _ = open_spec_dataset(flow.spec, data_dir)
        if not source.discrete:
            raise DataError("interpolate draws images; this flow's data are not images",
                            hint="use flowspec sample or trace for 2-D flows")
        n_test = len(source.load("test"))
        if n_test < 2:
            raise DataError(f"interpolate needs at least 2 test images; the test split has "
                            f"{n_test}")
        if pairs > n_test // 2:
            warn(f"the test split has {n_test} images: {n_test // 2} pair(s) instead of "
                 f"{pairs}")
            pairs = n_test // 2
        name = f"interpolate-pairs{pairs}-steps{steps}-seed{seed}.png"
        from flowspec.run.layout import INTERPOLATIONS_DIR

        path, replaced = output_for(output, resolved, INTERPOLATIONS_DIR, name,
                                    IMAGE_SUFFIXES)
        from flowspec.sampling import interpolate_figure

        wrote(interpolate_figure(flow, path, data_dir=data_dir, pairs=pairs, steps=steps,
                                 seed=seed), replaced)

    @app.command()
    @user_errors
    def manipulate(
        ckpt: Path = CkptArgument,
        attr: str = typer.Option(..., "--attr", help="Attribute name, e.g. Smiling."),
        alphas: str = typer.Option("-2,-1,0,1,2", "--alphas",
                                   help="Steps along the direction, comma-separated."),
        image: Path = typer.Option(None, "--image", help="Edit this image instead of test ones."),
        output: Path = typer.Option(None, "-o", "--output", help="Output file (default: "
                                    "RUN/manipulations/..., never overwriting)."),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        data_dir: Path = DataDirOption,
        device: str = DeviceOption,
    ) -> None:
        """Move images along an attribute direction in latent space (mean pos − mean neg)."""
        from flowspec.errors import FlowspecError

        values = parse_floats(alphas, "--alphas")
        if image is not None and not image.is_file():
            raise FlowspecError(f"--image {image}: no such file")
        flow, resolved = load_flow(ckpt, device, which, untrained)
        what = image.stem if image is not None else "test"
        name = f"manipulate-{attr}-{what}.png"
        from flowspec.run.layout import MANIPULATIONS_DIR

        path, replaced = output_for(output, resolved, MANIPULATIONS_DIR, name,
                                    IMAGE_SUFFIXES)
        from flowspec.sampling import manipulate_figure

        wrote(manipulate_figure(flow, path, attr=attr, alphas=values, data_dir=data_dir,
                                image=image), replaced)

    @data_app.command("fetch")
    @user_errors
    def fetch(name: str = typer.Argument(..., help="Dataset: mnist | cifar10"),
              data_dir: Path = DataDirOption,
              mirror: str = typer.Option(None, "--mirror", envvar="FLOWSPEC_MIRROR",
                                         help="Base URL to download from instead.")) -> None:
        """Download a dataset and verify its checksums."""
        from flowspec.data.fetch import fetch as do_fetch

        console.print(f"[green]ok[/] {do_fetch(name, data_dir, mirror=mirror)}")

    @data_app.command("info")
    @user_errors
    def info(spec: Path, data_dir: Path = DataDirOption, set_: list[str] = SetOption) -> None:
        """Describe a spec's dataset: shapes, sizes, classes, entropy floor."""
        from flowspec.data import open_dataset
        from flowspec.spec import load_spec

        s = load_spec(spec, set_ or [])
        source, prep = open_dataset(s.data, data_dir)
        for split in ("train", "test"):
            d = source.load(split)
            console.print(f"{split}: {tuple(d.x.shape)} {d.x.dtype}"
                          + (f", labels {int(d.y.max()) + 1} classes" if d.y is not None else ""))
        console.print(f"example shape {list(source.shape)}, discrete={source.discrete}, "
                      f"n_bits={getattr(prep, 'n_bits', None)}, entropy={source.entropy}")


# -- eval helpers ----------------------------------------------------------------------------
def _score(flow, data: Path, per_row: Path | None, as_json: bool, checkpoint: dict,
           data_dir: Path | None, batch_size: int) -> None:
    """``eval --data``: one log-density per row of ``data``, summarised (and written)."""
    from flowspec.data.score import score_rows

    scores, _ = score_rows(flow, data, data_dir=data_dir, batch_size=batch_size)
    values = [float(v) for v in scores]
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    summary = {"data": str(data), "n": len(values),
               "mean_log_prob_nats": sum(finite) / len(finite) if finite else None,
               "nll_nats": -sum(finite) / len(finite) if finite else None,
               "min_log_prob_nats": min(finite) if finite else None,
               "max_log_prob_nats": max(finite) if finite else None,
               "non_finite": len(values) - len(finite)}
    replaced = per_row is not None and per_row.exists()
    if per_row is not None:
        from flowspec.oserrors import write_error

        text = "row,log_prob_nats\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(values))
        try:
            per_row.write_text(text)
        except OSError as err:
            raise write_error(per_row, err) from None
    if as_json:
        print(json.dumps({**summary, "per_row": str(per_row) if per_row else None,
                          "log_prob_nats": values, "checkpoint": checkpoint}))
        return
    if summary["non_finite"]:
        warn(f"{summary['non_finite']} row(s) have a log-density of -inf or nan (outside "
             "what the flow can produce)")
    for k, v in summary.items():
        console.print(f"{k:>20}: {num(v)}", highlight=False)
    if per_row is not None:
        wrote(per_row, replaced)


# -- train helpers ---------------------------------------------------------------------------
def _done(result) -> None:
    """The closing lines: timestamped records like the log's when not on a terminal."""
    from rich.text import Text

    from flowspec.train.report import summary_lines, timestamp

    stamp = "" if is_tty() else f"{timestamp()} "
    line = Text(stamp)
    line.append("done", style="green")
    line.append(f": {result.run_dir}")
    console.print(line, highlight=False)
    for text in summary_lines(result.metrics, result.metrics_split, result.best):
        console.print(f"{stamp}{text}", highlight=False, markup=False)


def _sweep(request, items: list[str]) -> None:
    """Sequential runs over every combination of the swept values, then a comparison."""
    from flowspec.train import sweep

    def announce(i: int, n: int, label: str) -> None:
        console.print(f"[bold]sweep {i}/{n}[/]: {label}", highlight=False)

    rows = sweep(request, items, make_reporter=_reporter, announce=announce, warn=warn)
    key = rows[0].metric if rows else "metric"
    split = next((r.best_split for r in rows if r.best_split), "val")
    print_table(["run", f"best {split} {key}", "best step", f"test {key} @ best",
                 f"test {key} @ last", "last step", "time", "status", "run dir"],
                [[r.label, r.best if r.best is not None else "no best", r.best_step,
                  r.test_at_best, r.test_at_last, r.last_step, f"{r.elapsed_s:.0f} s",
                  r.status, r.run_dir] for r in rows],
                title="sweep over " + ", ".join(item.partition("=")[0] for item in items)
                + f": ranked by best {split} {key} (the best checkpoint, which flowspec eval "
                  "uses)")
