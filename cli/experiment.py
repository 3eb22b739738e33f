"""Experiment commands: train, eval, sample, trace, interpolate, manipulate, data."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from flowspec.train.report import PlainReporter, Reporter, format_metrics
from flowspec_cli.common import (
    DataDirOption,
    DeviceOption,
    SetOption,
    console,
    is_tty,
    parse_floats,
    user_errors,
)


class RichReporter(Reporter):
    """A progress bar with loss, bits/dim, throughput and ETA; a line per epoch."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = None

    def start(self, *, run_dir, total_steps, start_step, steps_per_epoch, device):
        console.print(f"run dir [bold]{run_dir}[/] · {total_steps} steps "
                      f"({steps_per_epoch}/epoch) on {device}"
                      + (f" · resuming at step {start_step}" if start_step else ""))
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step,
                                           stats="")

    def log(self, step, metrics):
        keys = ("loss", "bits_per_dim", "nll_nats", "kl_nats", "examples_per_s")
        stats = format_metrics({k: metrics[k] for k in keys if k in metrics})
        self.progress.update(self.task, completed=step, stats=stats)

    def epoch(self, epoch, metrics, split="test"):
        self.progress.console.print(f"epoch {epoch} {split}: {format_metrics(metrics)}")

    def message(self, text):
        self.progress.console.print(text)

    def close(self):
        self.progress.stop()


def _flow(ckpt: Path, device: str):
    import flowspec
    from flowspec.train.loop import resolve_device

    flow = flowspec.load(ckpt)
    return flow.to(resolve_device(device))


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def train(
        spec: Path = typer.Argument(None, help="Spec file (omit with --resume)."),
        set_: list[str] = SetOption,
        out: Path = typer.Option(Path("runs"), "--out", help="Root of run directories."),
        device: str = DeviceOption,
        data_dir: Path = DataDirOption,
        resume: Path = typer.Option(None, "--resume", help="Run directory to continue."),
        seed: int = typer.Option(None, "--seed", help="Override train.seed."),
        quick: bool = typer.Option(False, "--quick", help="Apply the spec's quick overrides."),
        data: Path = typer.Option(None, "--data", help="Train on this .csv/.npy/.npz/"
                                  ".safetensors file instead of the spec's dataset."),
    ) -> None:
        """Train a spec by maximum likelihood or reverse KL; checkpoints into a run directory."""
        from flowspec.errors import FlowspecError
        from flowspec.spec import load_spec
        from flowspec.train.loop import train as run

        if spec is None and resume is None:
            raise FlowspecError("give a spec to train, or --resume RUN_DIR")
        if data is not None and spec is None:
            raise FlowspecError("--data starts a fresh run; a resumed run keeps its data")
        s = load_spec(spec, set_ or [], quick=quick) if spec is not None and data is None \
            else None
        if data is not None:  # the spec's dataset becomes {file: {path: DATA, ...}}
            from flowspec.data.files import load_spec_on_file

            s = load_spec_on_file(spec, data, set_ or [], quick=quick)
        reporter = RichReporter() if is_tty() else PlainReporter(console.print)
        result = run(s, out_root=out, device=device, data_dir=data_dir, resume=resume,
                     seed=seed, overrides=set_, reporter=reporter)
        console.print(f"[green]done[/]: {result.run_dir / 'last.safetensors'}")
        if result.metrics:
            console.print(format_metrics(result.metrics))

    @app.command("eval")
    @user_errors
    def evaluate(
        ckpt: Path = typer.Argument(..., help="Checkpoint or run directory."),
        data_dir: Path = DataDirOption,
        split: str = typer.Option("test", help="test | train"),
        device: str = DeviceOption,
        batch_size: int = typer.Option(500, help="Evaluation batch size."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Held-out negative log-likelihood in nats and bits/dim (reverse KL for energy runs)."""
        from flowspec.train.objectives import build_objective

        flow = _flow(ckpt, device)
        dev = flow._reference_tensor().device
        if flow.spec.train["objective"] == "reverse_kl":
            metrics = build_objective(flow.spec, flow, data_dir, dev).evaluate(flow)
        else:
            from flowspec.data import open_spec_dataset
            from flowspec.train.evaluate import evaluate_nll

            source, prep = open_spec_dataset(flow.spec, data_dir)
            metrics = evaluate_nll(flow, source.load(split), prep, batch_size=batch_size,
                                   device=dev, entropy=source.entropy)
        if as_json:
            print(json.dumps(metrics))
        else:
            for k, v in metrics.items():
                console.print(f"{k:>20}: {v:.6g}" if isinstance(v, float) else f"{k:>20}: {v}")

    @app.command()
    @user_errors
    def sample(
        ckpt: Path = typer.Argument(..., help="Checkpoint or run directory."),
        n: int = typer.Option(64, "-n", help="Number of samples."),
        temp: float = typer.Option(None, "--temp", help="Temperature (default: spec's sample)."),
        temps: str = typer.Option(None, "--temps", help="Grid: 0,0.5,0.7,1 (one row each)."),
        seed: int = typer.Option(0, "--seed"),
        output: Path = typer.Option(Path("samples.png"), "-o", "--output"),
        npy: bool = typer.Option(False, "--npy", help="Save raw arrays (.npy) instead."),
        label: int = typer.Option(None, "--class", help="Class for conditional flows."),
        context: str = typer.Option(None, "--context",
                                    help="Context vector for conditional flows: 0.5,1.0"),
        data_dir: Path = DataDirOption,
        device: str = DeviceOption,
    ) -> None:
        """Draw samples: an image grid, a 2-D scatter with density, raw arrays, or a data
        file (-o samples.csv / .npy / .npz)."""
        from flowspec.data.export import parse_context
        from flowspec.sampling import sample_figure

        flow = _flow(ckpt, device)
        torch.manual_seed(seed)
        temperatures = parse_floats(temps, "--temps") if temps else ([temp] if temp is not None
                                                                    else None)
        path = sample_figure(flow, output, n=n, temperatures=temperatures, data_dir=data_dir,
                             label=label, npy=npy, context=parse_context(flow, context))
        console.print(f"wrote {path}")

    @app.command()
    @user_errors
    def trace(
        ckpt: Path = typer.Argument(..., help="Checkpoint or run directory of a 2-D flow."),
        output: Path = typer.Option(Path("trace.png"), "-o", "--output"),
        n: int = typer.Option(2000, "-n", help="Points per row."),
        seed: int = typer.Option(0, "--seed"),
        data_dir: Path = DataDirOption,
    ) -> None:
        """Per-node panels of test points (data → latent) and samples (latent → data)."""
        from flowspec.viz.trace import plot_trace

        flow = _flow(ckpt, "cpu")
        torch.manual_seed(seed)
        if flow.spec.train["objective"] == "reverse_kl":
            x = flow.sample(n)
        else:
            from flowspec.data import open_dataset

            source, prep = open_dataset(flow.spec.data, data_dir)
            x = prep.deterministic(source.load("test").x[:n])
        console.print(f"wrote {plot_trace(flow, x, output, n_samples=n)}")

    @app.command()
    @user_errors
    def interpolate(
        ckpt: Path = typer.Argument(..., help="Checkpoint or run directory."),
        pairs: int = typer.Option(4, help="Rows: pairs of test images."),
        steps: int = typer.Option(8, help="Images per row."),
        seed: int = typer.Option(0, "--seed"),
        output: Path = typer.Option(Path("interpolation.png"), "-o", "--output"),
        data_dir: Path = DataDirOption,
        device: str = DeviceOption,
    ) -> None:
        """Linear interpolation in latent space between pairs of test images."""
        from flowspec.sampling import interpolate_figure

        flow = _flow(ckpt, device)
        console.print(f"wrote {interpolate_figure(flow, output, data_dir=data_dir, pairs=pairs, steps=steps, seed=seed)}")  # noqa: E501

    @app.command()
    @user_errors
    def manipulate(
        ckpt: Path = typer.Argument(..., help="Checkpoint or run directory."),
        attr: str = typer.Option(..., "--attr", help="Attribute name, e.g. Smiling."),
        alphas: str = typer.Option("-2,-1,0,1,2", "--alphas"),
        image: Path = typer.Option(None, "--image", help="Edit this image instead of test ones."),
        output: Path = typer.Option(Path("manipulation.png"), "-o", "--output"),
        data_dir: Path = DataDirOption,
        device: str = DeviceOption,
    ) -> None:
        """Move images along an attribute direction in latent space (mean pos − mean neg)."""
        from flowspec.sampling import manipulate_figure

        flow = _flow(ckpt, device)
        path = manipulate_figure(flow, output, attr=attr, alphas=parse_floats(alphas, "--alphas"),
                                 data_dir=data_dir, image=image)
        console.print(f"wrote {path}")

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
