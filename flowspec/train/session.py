"""Training as library functions: a fresh run, a resume, a sweep -- each from one request.

``flowspec train`` (fresh, ``--resume``, ``--sweep``) and :func:`flowspec.fit` are thin
callers of these; they differ only in how they print.

* :func:`train` -- run a :class:`~flowspec.train.request.TrainRequest` (a fresh run or
  a resume); ``nproc > 1`` spawns that many local data-parallel workers;
* :func:`resume` -- :func:`train` of a run directory, with resume overrides;
* :func:`sweep` -- one run per combination of swept values, then their comparison.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowspec.errors import FlowspecError
from flowspec.train.callbacks import Callback, StepCallback, TrainingDiverged
from flowspec.train.loop import RunResult, Trainer
from flowspec.train.report import Reporter
from flowspec.train.request import TrainRequest, make_request

__all__ = ["RunResult", "SweepRow", "parse_sweep", "rank_rows", "resume", "sweep", "train"]


def _as_request(request: Any, options: dict[str, Any]) -> TrainRequest:
    if isinstance(request, TrainRequest):
        if options:
            raise TypeError(f"options {sorted(options)} go into the request, not next to it")
        return request
    return make_request(request, **options)


def _run_here(request: TrainRequest, reporter: Reporter | None,
              callbacks: Sequence[Callback]) -> RunResult:
    """One process's run: join the process group the environment describes (torchrun,
    ``--nproc``), train, leave the group -- also when building the trainer fails."""
    from flowspec.train import distributed

    group, device = distributed.setup(request.device)
    try:
        return Trainer(request, reporter=reporter, group=group, device=device,
                       callbacks=callbacks).run()
    finally:
        distributed.teardown(group)


def train(request: TrainRequest | Any = None, *, reporter: Reporter | None = None,
          make_reporter: Callable[[], Reporter] | None = None,
          on_step: Callable[[int], None] | None = None, callbacks: Sequence[Callback] = (),
          **options: Any) -> RunResult:
    """Run a training request: a fresh run, or the resume of ``request.resume``.

    ``request`` is a :class:`TrainRequest`, or a spec (file, YAML text, dict, loaded
    spec) with the options of :func:`~flowspec.train.request.make_request` (``out``,
    ``overrides``, ``seed``, ``resume``, ``nproc`` ...). ``reporter`` shows progress
    (``make_reporter``, a picklable callable, builds it inside each worker of a
    multi-process run); ``on_step(step)`` is called after every step.

    ``nproc > 1`` spawns that many local data-parallel workers (one GPU each on CUDA,
    gloo on CPU; see :mod:`flowspec.train.distributed`); the returned flow is then
    loaded from the run's last checkpoint.
    """
    from flowspec.train import distributed

    request = _as_request(request, options)
    callbacks = [*callbacks, *([StepCallback(on_step)] if on_step is not None else [])]
    if request.nproc <= 1:
        if reporter is None and make_reporter is not None:
            reporter = make_reporter()
        return _run_here(request, reporter, callbacks)
    if distributed.launched_world() > 1:
        raise FlowspecError(f"--nproc {request.nproc} inside a torchrun worker (WORLD_SIZE is "
                            "set)", hint="let torchrun start the processes, or use --nproc "
                                         "alone")
    distributed.check_launch(request.nproc, request.device,
                             request.spec.train["batch_size"] if request.spec is not None
                             else None)
    run_dir, step, metrics = distributed.launch(request.nproc, _worker, request,
                                                make_reporter, callbacks)
    import flowspec
    from flowspec.run.layout import checkpoint_path
    from flowspec.run.status import read_status

    best = read_status(Path(run_dir)).get("best")
    return RunResult(run_dir=Path(run_dir), step=step, metrics=metrics,
                     flow=flowspec.load(checkpoint_path(run_dir, "last")), best=best,
                     metrics_split=(best or {}).get("split"))


def _worker(request: TrainRequest, make_reporter: Callable[[], Reporter] | None,
            callbacks: Sequence[Callback]) -> tuple[str, int, dict]:
    """One ``--nproc`` worker: a process like any torchrun-started one; rank 0's summary."""
    result = _run_here(request, make_reporter() if make_reporter is not None else None,
                       callbacks)
    return str(result.run_dir), result.step, result.metrics


def resume(run_dir: str | Path, overrides: Any = None, **options: Any) -> RunResult:
    """Continue the run in ``run_dir`` (see :func:`train`); ``overrides`` may change only
    what :mod:`flowspec.run.overrides` allows (length, lr, grad_clip, cadences)."""
    train_options = {k: options.pop(k) for k in ("reporter", "make_reporter", "on_step",
                                                  "callbacks") if k in options}
    return train(make_request(resume=run_dir, overrides=overrides, **options),
                 **train_options)


# -- sweeps ------------------------------------------------------------------------------
def parse_sweep(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["vars.K=2,8,32"]`` -> ``[("vars.K", ["2", "8", "32"])]``."""
    out = []
    for item in items:
        path, eq, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not path.strip() or not vals:
            raise FlowspecError(f"--sweep {item}: expected PATH=V1,V2,...",
                                hint="e.g. --sweep vars.K=2,8,32")
        out.append((path.strip(), vals))
    return out


@dataclass
class SweepRow:
    """One run of a sweep, as the comparison shows it."""

    label: str
    run_dir: Path | None
    status: str
    elapsed_s: float
    #: the key metric, its best value (on the selection split ``best_split``) and step:
    #: the checkpoint ``flowspec eval`` uses, and the one the comparison ranks by
    metric: str
    best: float | None = None
    best_step: int | None = None
    best_split: str | None = None
    #: the key metric on test of the ``best`` checkpoint (None without one)
    test_at_best: float | None = None
    #: the key metric on test at the last step (the ``last`` checkpoint)
    test_at_last: float | None = None
    last_step: int | None = None


def _test_at_best(run_dir: Path, data_dir: Any) -> float | None:
    """The key metric on test of a run's ``best`` checkpoint (what ``flowspec eval`` says)."""
    import flowspec
    from flowspec.objectives import objective_class
    from flowspec.run.layout import checkpoint_path

    path = checkpoint_path(run_dir, "best")
    if not path.is_file():
        return None
    flow = flowspec.load(path)
    cls = objective_class(flow.spec)
    return cls.evaluate_trained(flow, flow.spec, split="test", data_dir=data_dir
                                ).get(cls.key_metric)


def rank_rows(rows: Sequence[SweepRow]) -> list[SweepRow]:
    """Best first by the checkpoint eval uses (``best`` on validation); runs without one
    after, by their last test value."""
    def key(r: SweepRow) -> tuple[int, float]:
        if r.best is not None:
            return (0, r.best)
        return (1, r.test_at_last if r.test_at_last is not None else float("inf"))

    return sorted(rows, key=key)


def sweep(request: TrainRequest, axes: Sequence[tuple[str, Sequence[str]]] | Sequence[str], *,
          make_reporter: Callable[[], Reporter] | None = None,
          announce: Callable[[int, int, str], None] | None = None,
          warn: Callable[[str], None] = print) -> list[SweepRow]:
    """Sequential runs over every combination of the swept values (``[(path, values)]`` or
    ``"PATH=V1,V2"`` strings); every combination is resolved before the first run.
    ``announce(i, n, label)`` is called before run ``i`` of ``n``; a diverged run is
    recorded and the sweep goes on; a Ctrl-C ends it with the runs so far."""
    from flowspec.objectives import objective_class
    from flowspec.run.metrics import last_row
    from flowspec.run.status import read_status

    if request.is_resume:
        raise FlowspecError("--sweep starts fresh runs; it cannot be combined with --resume")
    if request.nproc > 1:
        raise FlowspecError("--sweep runs its trainings in one process; drop --nproc",
                            hint="or launch each value with --nproc and --set")
    axes = parse_sweep(axes) if axes and isinstance(axes[0], str) else list(axes)  # type: ignore
    fixed = {s.partition("=")[0].strip() for s in request.overrides}
    clash = [p for p, _ in axes if p in fixed]
    if clash:
        raise FlowspecError(f"--sweep and --set both set {', '.join(clash)}")
    combos = [list(zip([p for p, _ in axes], values))
              for values in itertools.product(*[v for _, v in axes])]
    requests = [request.with_overrides([f"{p}={v}" for p, v in combo]) for combo in combos]
    rows: list[SweepRow] = []
    for i, (combo, req) in enumerate(zip(combos, requests), 1):
        label = " ".join(f"{p}={v}" for p, v in combo)
        if announce is not None:
            announce(i, len(combos), label)
        metric = objective_class(req.spec).key_metric
        t0 = time.time()
        trainer = Trainer(req, reporter=make_reporter() if make_reporter else None)
        status = "finished"
        try:
            trainer.run()
        except TrainingDiverged as err:
            status = "diverged"
            warn(str(err))
        except KeyboardInterrupt:
            warn("sweep interrupted: comparing the runs so far")
            break
        run_dir = trainer.run_dir
        best = read_status(run_dir).get("best") or {}
        last_test = last_row(run_dir, "test")
        rows.append(SweepRow(label=label, run_dir=run_dir, status=status,
                             elapsed_s=time.time() - t0, metric=metric,
                             best=best.get("value"), best_step=best.get("step"),
                             best_split=best.get("split"),
                             test_at_best=_test_at_best(run_dir, req.data_dir),
                             test_at_last=last_test.get(metric),
                             last_step=last_test.get("step")))
    return rank_rows(rows)
