"""The training loop: one :class:`Trainer`, resumable to the bit.

Determinism without saving RNG streams: the data order of epoch ``e`` comes
from a generator seeded by ``(seed, e)``, and the global RNG (dequantization
noise, prior samples) is re-seeded from ``(seed, step)`` before every step. A
run killed at any point and resumed from its last checkpoint therefore replays
exactly the steps an uninterrupted run would have taken.

The trainer is the loop and nothing else: it builds the flow, the objective and
the optimiser from a :class:`~flowspec.train.request.TrainRequest` (reading, never
writing), and :meth:`Trainer.run` opens the run directory (:mod:`flowspec.run`)
and steps. Evaluation, checkpoints, status, drawing, NaN diagnosis, metric sinks
and signals are callbacks with their own state (:mod:`flowspec.train.callbacks`).
Data parallelism is the process group it is given (:mod:`flowspec.train.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowspec.api import build_flow, resolve_device
from flowspec.checkpoint import check_weights, clean_stale_temps, load_weights
from flowspec.errors import CheckpointError
from flowspec.objectives import build_objective
from flowspec.run.create import make_run_dir, new_run_id, write_run_files
from flowspec.run.layout import METRICS, RESUMES
from flowspec.run.metrics import metrics_path, truncate_metrics
from flowspec.run.overrides import record_resume
from flowspec.run.state import STATE_FILE, Resumed, best_so_far, load_optimizer, open_resume
from flowspec.run.status import DIVERGED, FAILED, FINISHED, INTERRUPTED, read_status
from flowspec.train import distributed
from flowspec.train.callbacks import (
    Callback,
    Checkpoints,
    Drawing,
    Evaluation,
    GracefulStop,
    MetricSinks,
    NaNWatchdog,
    StatusFile,
    TrainingDiverged,
)
from flowspec.train.loader_watch import LoaderWatch
from flowspec.train.optim import EMA, build_optimizer, build_scheduler, set_base_lr
from flowspec.train.precision import Precision, resolve_precision
from flowspec.train.report import PlainReporter, Reporter, SilentReporter
from flowspec.train.request import TrainRequest

__all__ = ["RunResult", "Trainer", "TrainingDiverged", "step_seed"]


@dataclass
class RunResult:
    """What a training run leaves: its directory, last step and last evaluation."""

    run_dir: Path
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the trained flow (EMA weights swapped in when the run keeps an EMA), in eval mode
    flow: Any = None
    #: the best evaluation (``{"metric", "value", "step", "split"}``, the checkpoint
    #: ``flowspec eval``/``sample`` use), None when no validation split chose one
    best: dict[str, Any] | None = None
    #: the split ``metrics`` were evaluated on (``val`` when it chooses ``best``, else test)
    metrics_split: str | None = None
    #: why the run stopped before its last step (early stopping), else None
    stop_reason: str | None = None
    #: this process's rank (0 in a single process; only rank 0 writes and reports)
    rank: int = 0


def _scalar(v: Any) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The global RNG's seed for one step; each rank of a distributed run has its own."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


class Trainer:
    """Trains the flow of a request's spec (or resumes its run directory); :meth:`run`
    does it.

    Construction reads (the spec, the data, a resumed run's snapshot) and builds; it
    writes nothing and joins nothing, so a trainer that is never run leaves no trace.
    ``group`` is this process's place in a data-parallel run (one process: the
    default); ``callbacks`` are called before the built-in ones.
    """

    def __init__(self, request: TrainRequest, *, reporter: Reporter | None = None,
                 group: distributed.Group = distributed.SINGLE,
                 device: torch.device | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.request, self.group = request, group
        self.reporter = (reporter or PlainReporter()) if group.is_main else SilentReporter()
        self.device = device or resolve_device(request.device)
        self.resumed: Resumed | None = (open_resume(request.resume, list(request.overrides))
                                        if request.resume is not None else None)
        spec = self.resumed.spec if self.resumed is not None else request.spec
        self.spec = spec
        self.spec_yaml = self.resumed.spec_yaml if self.resumed is not None else spec.to_yaml()
        self.cfg = spec.train
        self.seed = self.resumed.info["seed"] if self.resumed is not None else self.cfg["seed"]
        self.run_dir: Path | None = self.resumed.run_dir if self.resumed is not None else None
        self.run_id = (self.resumed.info.get("run_id") or new_run_id()) \
            if self.resumed is not None else None
        #: why the run stops before ``total`` (early stopping), else None
        self.stop_reason: str | None = None
        #: what ``run.json`` records of a fresh run (seed, device, source, data)
        self.run_info: dict[str, Any] = {}

        torch.manual_seed(self.seed)
        layout = torch.channels_last if self.cfg["channels_last"] else torch.preserve_format
        self.flow = build_flow(spec).to(self.device, memory_format=layout)
        self.objective = build_objective(spec, self.flow, request.data_dir, self.device,
                                         shard=distributed.shard(group))
        self.precision = Precision(resolve_precision(self.cfg, self.reporter.message),
                                   self.device)
        self.train_view = self._train_view()
        self.steps_per_epoch = self.objective.steps_per_epoch
        self.total = self.cfg["steps"] or self.cfg["epochs"] * self.steps_per_epoch
        self.opt = build_optimizer(self.flow.parameters(), self.cfg)
        self.sched = build_scheduler(self.opt, self.cfg, self.total)
        self.ema = EMA(self.flow, self.cfg["ema"]) if self.cfg["ema"] else None
        self.params = [p for p in self.flow.parameters() if p.requires_grad]
        self.start_step = 0
        self.sinks = MetricSinks(self.cfg["log"])
        if self.resumed is not None:
            self.evaluation = self._load_resumed(self.resumed)
            self.checkpoints = Checkpoints(saved_step=self.start_step)
        else:
            self.evaluation = Evaluation(self)
            self.checkpoints = Checkpoints()
            self.run_info = {"seed": self.seed, "device": str(self.device),
                             "spec_source": spec.source}
            # e.g. fit data statistics (standardize), pin data files
            spec, data = self.objective.prepare_fresh_run(self.flow, spec,
                                                          self.reporter.message)
            if data is not None:
                self.run_info["data"] = data
            if spec is not self.spec:
                self.spec, self.flow.spec, self.spec_yaml = spec, spec, spec.to_yaml()
        self.status = StatusFile()
        self.stop = GracefulStop()
        self.callbacks: list[Callback] = [
            *callbacks, self.sinks, self.evaluation, self.checkpoints, self.status, Drawing(),
            NaNWatchdog(), LoaderWatch(), self.stop]

    # -- set-up ------------------------------------------------------------------------
    def _train_view(self) -> distributed.TrainView:
        """The flow as the loss calls it: through DDP (several ranks) and torch.compile."""
        entry: Any = distributed.wrap(self.flow, self.group, self.device)
        if self.cfg.get("compile"):
            from flowspec.train.torch_compile import CompiledOrEager

            entry = CompiledOrEager(entry, self.reporter.message)
        return distributed.TrainView(self.flow, entry)

    def _load_resumed(self, resumed: Resumed) -> Evaluation:
        """Weights, EMA, optimizer, scheduler and counters of the snapshot (in memory)."""
        info, where = resumed.info, str(resumed.run_dir / STATE_FILE)
        load_weights(self.flow, resumed.weights, where)
        if self.ema is not None and resumed.ema is not None:
            check_weights(self.flow, resumed.ema, where + " (EMA weights)")
            self.ema.state = {k: v.to(self.device).clone() for k, v in resumed.ema.items()}
        try:
            load_optimizer(self.opt, {k: v.to(self.device) for k, v in
                                      resumed.optimizer.items()}, info["optimizer"])
            self.sched.load_state_dict(info["scheduler"])
            self.precision.load_state_dict(info.get("grad_scaler"))
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise CheckpointError(f"{where}: the optimizer state does not fit this model "
                                  f"({err})", hint="the file was altered or mixed with "
                                  "another run's") from None
        self.start_step = info["step"]
        if "lr" in resumed.changes:  # after the optimizer state, which carries the old lr
            self.set_lr(resumed.changes["lr"][1])
        status = read_status(resumed.run_dir)
        best = best_so_far(resumed.run_dir, info["best"], self.start_step,
                           self.objective.key_metric)
        return Evaluation(self, best, status.get("early_stopping"), status.get("best"))

    def _open_run_dir(self) -> None:
        """A fresh run's directory and files (rank 0 names it; every rank uses that name);
        a resumed run's clean-up, and the record of its overrides."""
        if self.resumed is None:
            run_dir = run_id = None
            if self.group.is_main:
                run_dir = make_run_dir(self.request.out, self.spec.name, self.spec_yaml)
                run_id = new_run_id()
                write_run_files(run_dir, self.spec_yaml, list(self.request.overrides),
                                {**self.run_info, "run_id": run_id,
                                 "processes": self.group.world})
            self.run_dir, self.run_id = distributed.broadcast_object(self.group,
                                                                     (run_dir, run_id))
            return
        resumed = self.resumed
        if not self.group.is_main:  # rank 0 alone writes in the run directory
            return
        clean_stale_temps(resumed.run_dir)
        dropped = truncate_metrics(metrics_path(resumed.run_dir), self.start_step)
        if dropped:
            self.reporter.message(f"{METRICS}: {dropped} row(s) past step "
                                  f"{self.start_step} dropped (they are replayed)")
        if resumed.changes:  # a consistent snapshot of the new spec before spec.yaml
            self.checkpoints.save(self, self.start_step,
                                  metrics=resumed.info.get("metrics") or {})
        if resumed.overrides:
            record_resume(resumed.run_dir, self.start_step, resumed.overrides,
                          resumed.changes, self.spec_yaml)

    def set_lr(self, lr: float) -> None:
        """Make ``lr`` the base learning rate from now on (the schedule's factor still
        applies)."""
        set_base_lr(self.opt, self.sched, lr)

    # -- helpers the callbacks use -------------------------------------------------------
    def step_seed(self, step: int) -> int:
        return step_seed(self.seed, step, self.group.rank)

    def is_epoch_end(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0 or step == self.total

    def with_ema(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` with the EMA weights swapped in (if the run keeps an EMA)."""
        raw = self.ema.swap_in() if self.ema is not None else None
        try:
            return fn()
        finally:
            if raw is not None:
                self.flow.load_state_dict(raw)

    # -- one step ------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[torch.Tensor, dict, Any] | None:
        """One optimiser step; ``(loss, stats, grad_norm)``, or None if the loss was
        non-finite and the step was skipped."""
        self.flow.train()
        torch.manual_seed(self.step_seed(step))
        with self.precision.autocast():
            loss, stats = self.objective.loss(self.train_view, step, self.seed)
        # Every rank skips together (a rank alone in backward would wait forever).
        if distributed.any_true(self.group, ~torch.isfinite(loss), self.device):
            return None
        self.opt.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        grad_norm = self.precision.step(self.opt, self.params, self.cfg["grad_clip"])
        return loss, stats, grad_norm

    def log_row(self, step: int, loss: torch.Tensor, stats: dict, grad_norm: Any,
                examples_per_s: float) -> dict:
        row = {"step": step, "epoch": step / self.steps_per_epoch,
               "loss": float(loss.detach()), "lr": self.sched.get_last_lr()[0],
               "examples_per_s": examples_per_s, **{k: _scalar(v) for k, v in stats.items()}}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        row.update(self.objective.train_metrics(row, self.flow))
        self.reporter.log(step, row)
        self.sinks.write(self, "train", row)
        for cb in self.callbacks:
            cb.after_log(self, step, row)
        return row

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> RunResult:
        """Open the run directory, train to ``total`` (or an early stop), close it."""
        self._open_run_dir()
        cfg = self.cfg
        self.reporter.start(run_dir=self.run_dir, total_steps=self.total,
                            start_step=self.start_step, steps_per_epoch=self.steps_per_epoch,
                            device=str(self.device), loss_unit=self.objective.loss_unit)
        if self.resumed is not None and self.resumed.overrides:  # said once accepted
            self.reporter.message(f"resume overrides: {' '.join(self.resumed.overrides)} "
                                  f"(recorded in {self.run_dir / RESUMES})")
        step, outcome = self.start_step, (FAILED, "did not start")
        try:
            for cb in self.callbacks:
                cb.start(self)
            for warning in self.objective.start_warnings():
                self.reporter.warning(warning)
            bad, t0, seen = 0, time.perf_counter(), 0
            while step < self.total and self.stop_reason is None:
                if distributed.stop_agreed(self.group, self.stop.requested, step, self.device):
                    self.checkpoints.save(self, step)
                    raise KeyboardInterrupt
                result = self.train_step(step)
                if result is None:
                    bad += 1
                    for cb in self.callbacks:
                        cb.bad_step(self, step, bad)
                    step += 1
                    self.sched.step()
                    continue
                bad = 0
                loss, stats, grad_norm = result
                self.sched.step()
                if self.ema is not None:
                    self.ema.update(step)
                step += 1
                seen += self.objective.local_batch
                self.reporter.step(step)
                for cb in self.callbacks:
                    cb.after_step(self, step)
                if step % cfg["log_every"] == 0 or step == self.total:
                    now = time.perf_counter()
                    loss, stats, rate = distributed.reduce_log(
                        self.group, loss, stats, seen / max(now - t0, 1e-9), self.device)
                    self.log_row(step, loss, stats, grad_norm, rate)
                    t0, seen = now, 0
                if self.is_epoch_end(step):
                    epoch = math.ceil(step / self.steps_per_epoch)
                    for cb in self.callbacks:
                        cb.end_of_epoch(self, step, epoch, step == self.total)
                for cb in self.callbacks:
                    cb.end_of_step(self, step)
            outcome = (FINISHED, self.stop_reason)
        except KeyboardInterrupt:
            self.reporter.message(f"interrupted at step {step}; resume with --resume "
                                  f"{self.run_dir}")
            outcome = (INTERRUPTED, f"interrupted at step {step}")
            raise
        except TrainingDiverged as err:
            outcome = (DIVERGED, str(err))
            raise
        except BaseException as err:
            outcome = (FAILED, f"{type(err).__name__}: {err}")
            raise
        finally:
            for cb in self.callbacks:
                cb.end(self, outcome[0], outcome[1], step)
            self.reporter.close()
        if self.stop_reason is not None:
            self.reporter.message(self.stop_reason)
        if self.ema is not None:
            self.ema.swap_in()
        return RunResult(run_dir=self.run_dir, step=step, metrics=self.evaluation.last_metrics,
                         flow=self.flow.eval(), stop_reason=self.stop_reason,
                         rank=self.group.rank, best=self.evaluation.best_record(self),
                         metrics_split=self.evaluation.split(self))
