"""Experiment commands: train (and sweeps), eval, sample, trace, interpolate, manipulate, data.

Commands that use a trained flow say which checkpoint they used (path, step,
best/last), refuse a spec file unless ``--untrained`` is given, and write their
pictures into the run directory under a name that says what they are, never over
an existing file unless ``-o`` names it.
"""

from __future__ import annotations

import json
import time
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
        seed: int = typer.Option(None, "--seed", help="Override train.seed."),
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
    ) -> None:
        """Train a spec by maximum likelihood or reverse KL; checkpoints into a run directory.

        Several processes: --nproc N here, or torchrun --nproc-per-node N (--nnodes for
        several machines) running `flowspec train`."""
        from flowspec.errors import FlowspecError

        if resume is not None:
            if data is not None:
                raise FlowspecError("--data starts a fresh run; a resumed run keeps its data")
            if not resume.exists() and (out / resume).is_dir():
                resume = out / resume
            _train_resume(spec, resume, set_ or [], device, data_dir, seed, quick, sweep,
                          print_spec, nproc, compile_ or None)
            return
        if spec is None:
            raise FlowspecError("give a spec to train, or --resume RUN_DIR")
        set_ = [*(set_ or []), *(["train.compile=true"] if compile_ else [])]
        if sweep:
            if print_spec:
                raise FlowspecError("--print-spec prints one spec; drop --sweep")
            if nproc > 1:
                raise FlowspecError("--sweep runs its trainings in one process; drop --nproc",
                                    hint="or launch each value with --nproc and --set")
            _sweep(spec, sweep, set_ or [], quick, out, device, data_dir, seed, data,
                   compile_ or None)
            return
        s = _load_train_spec(spec, set_ or [], quick, data)
        if print_spec:
            print(s.to_yaml(), end="")
            return
        from flowspec.train.loop import train as run

        result = run(s, out_root=out, device=device, data_dir=data_dir, seed=seed,
                     overrides=set_, nproc=nproc, make_reporter=_reporter,
                     compile=compile_ or None)
        if result.rank != 0:  # under torchrun, rank 0 speaks for the run
            return
        _done(result)

    @app.command("eval")
    @user_errors
    def evaluate(
        ckpt: Path = CkptArgument,
        data_dir: Path = DataDirOption,
        split: str = typer.Option("test", help="test | val | train"),
        device: str = DeviceOption,
        batch_size: int = typer.Option(500, min=1, help="Evaluation batch size."),
        which: str = WhichOption,
        untrained: bool = UntrainedOption,
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (a flag; "
                                                           "takes no value)."),
    ) -> None:
        """Held-out negative log-likelihood in nats and bits/dim (reverse KL for energy runs)."""
        from flowspec.errors import FlowspecError

        if split not in ("test", "val", "train"):
            raise FlowspecError(f"--split must be test, val or train, got '{split}'")
        flow, resolved = load_flow(ckpt, device, which, untrained, quiet=as_json)
        from flowspec.objectives import objective_class

        metrics = objective_class(flow.spec).evaluate_trained(
            flow, flow.spec, split=split, data_dir=data_dir, batch_size=batch_size)
        from flowspec.check import logdet_methods

        methods = logdet_methods(flow)  # exact or an estimate, per free-form node
        if as_json:
            info = ({"path": str(resolved.checkpoint), "which": resolved.which,
                     "step": resolved.step, "notes": resolved.notes}
                    if resolved is not None else {"untrained": True})
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
        path, replaced = output_for(output, resolved, "samples", name, allowed)
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
        path, replaced = output_for(output, resolved, "trace", name, FIGURE_SUFFIXES)
        import torch

        from flowspec.objectives import objective_class
        from flowspec.viz.notes import collect_warnings
        from flowspec.viz.trace import plot_trace

        torch.manual_seed(seed)
        x = objective_class(flow.spec).reference_points(flow, flow.spec, n, data_dir)
        with collect_warnings() as notes:
            written = plot_trace(flow, x, path, n_samples=n)
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
        path, replaced = output_for(output, resolved, "interpolations", name, IMAGE_SUFFIXES)
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
        path, replaced = output_for(output, resolved, "manipulations", name, IMAGE_SUFFIXES)
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


# -- train helpers ---------------------------------------------------------------------------
def _done(result) -> None:
    """The closing lines: timestamped records like the log's when not on a terminal."""
    from rich.text import Text

    from flowspec.train.report import format_metrics, timestamp

    stamp = "" if is_tty() else f"{timestamp()} "
    line = Text(stamp)
    line.append("done", style="green")
    line.append(f": {result.run_dir}")
    console.print(line, highlight=False)
    if result.metrics:
        console.print(f"{stamp}final: {format_metrics(result.metrics)}", highlight=False,
                      markup=False)


def _train_resume(spec, resume, sets, device, data_dir, seed, quick, sweep, print_spec,
                  nproc: int = 1, compile_: bool | None = None) -> None:
    from flowspec.errors import FlowspecError
    from flowspec.runs import resolve_resume

    refused = [(spec is not None, f"SPEC ({spec})"), (seed is not None, "--seed"),
               (quick, "--quick"), (bool(sweep), "--sweep")]
    bad = [what for flag, what in refused if flag]
    if bad:
        raise FlowspecError(
            f"--resume continues a run with its own spec; {', '.join(bad)} cannot be used with "
            "it", hint="change what a resume may change with --set (train.steps, "
                       "train.optimizer.<name>.lr, train.grad_clip, cadences), or start a new "
                       "run from the spec")
    run_dir, notes = resolve_resume(resume)
    for line in notes:
        note(line)
    if print_spec:
        from flowspec.checkpoint import read_checkpoint
        from flowspec.train.resume import apply_resume_overrides

        ckpt = read_checkpoint(run_dir / "last.safetensors")
        s, _ = apply_resume_overrides(ckpt["spec"], sets, run_dir)
        print(s.to_yaml(), end="")
        return
    from flowspec.train.loop import train

    if sets:
        note(f"resume overrides: {' '.join(sets)} (recorded in {run_dir / 'resumes.jsonl'})")
    result = train(None, resume=run_dir, device=device, data_dir=data_dir, overrides=sets,
                   nproc=nproc, make_reporter=_reporter, compile=compile_)
    if result.rank == 0:
        _done(result)


def _sweep_values(items: list[str]) -> list[tuple[str, list[str]]]:
    from flowspec.errors import FlowspecError

    out = []
    for item in items:
        path, eq, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not path.strip() or not vals:
            raise FlowspecError(f"--sweep {item}: expected PATH=V1,V2,...",
                                hint="e.g. --sweep vars.K=2,8,32")
        out.append((path.strip(), vals))
    return out


def _load_train_spec(spec, sets, quick, data):
    """The spec to train: as given, or on ``--data FILE`` (its dataset becomes the file)."""
    if data is not None:
        from flowspec.data.files import load_spec_on_file

        return load_spec_on_file(spec, data, sets, quick=quick)
    from flowspec.spec import load_spec

    return load_spec(spec, sets, quick=quick)


def _sweep(spec, sweep, sets, quick, out, device, data_dir, seed, data=None,
           compile_: bool | None = None) -> None:
    """Sequential runs over every combination of the swept values, then a comparison."""
    import itertools

    from flowspec.errors import FlowspecError
    from flowspec.runs import read_status
    from flowspec.train.loop import Trainer, TrainingDiverged

    axes = _sweep_values(sweep)
    fixed = {s.partition("=")[0].strip() for s in sets}
    clash = [p for p, _ in axes if p in fixed]
    if clash:
        raise FlowspecError(f"--sweep and --set both set {', '.join(clash)}")
    combos = [list(zip([p for p, _ in axes], values))
              for values in itertools.product(*[v for _, v in axes])]
    specs = [_load_train_spec(spec, sets + [f"{p}={v}" for p, v in combo], quick, data)
             for combo in combos]  # every combination checked before the first run
    rows = []
    metric = None
    for i, (combo, s) in enumerate(zip(combos, specs), 1):
        label = " ".join(f"{p}={v}" for p, v in combo)
        console.print(f"[bold]sweep {i}/{len(combos)}[/]: {label}", highlight=False)
        t0 = time.time()
        trainer = Trainer(s, out_root=out, device=device, data_dir=data_dir, seed=seed,
                          overrides=sets + [f"{p}={v}" for p, v in combo], reporter=_reporter(),
                          compile=compile_)
        status, run_dir = "finished", trainer.run_dir
        try:
            trainer.run()
        except TrainingDiverged as err:
            status = "diverged"
            warn(str(err))
        except KeyboardInterrupt:
            warn("sweep interrupted: comparing the runs so far")
            break
        elapsed = time.time() - t0
        best = read_status(run_dir).get("best") or {}
        final = _final_metrics(run_dir)
        metric = metric or best.get("metric") or final.get("metric")
        rows.append([label, best.get("value"), best.get("step"), final.get("value"),
                     f"{elapsed:.0f} s", status, run_dir])
    key = metric or "metric"
    print_table(["run", f"best {key}", "best step", f"final test {key}", "time", "status",
                 "run dir"], rows, title=f"sweep over {', '.join(p for p, _ in axes)}")


def _final_metrics(run_dir: Path) -> dict:
    """The last test evaluation recorded in ``metrics.jsonl`` (key metric and value)."""
    last: dict = {}
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "test":
                last = row
    except (OSError, ValueError):
        return {}
    from flowspec.objectives import OBJECTIVES

    for key in dict.fromkeys(e.obj.key_metric for e in OBJECTIVES):
        if key in last:
            return {"metric": key, "value": last[key]}
    return {}
