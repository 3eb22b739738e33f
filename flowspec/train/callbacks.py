"""The parts of a training run around the loop, each with its own state.

:class:`~flowspec.train.loop.Trainer` runs the steps; everything else a run does is
a :class:`Callback` it calls at fixed points (``start``, ``after_step``,
``after_log``, ``end_of_epoch``, ``end_of_step``, ``bad_step``, ``end``), in this order
(callbacks given to the trainer come first):

* :class:`MetricSinks` -- ``metrics.jsonl`` (+ CSV, TensorBoard) rows;
* :class:`Evaluation` -- periodic evaluation, ``best``, and :class:`EarlyStopping`;
* :class:`Checkpoints` -- ``best``/``last`` and the resume state;
* :class:`StatusFile` -- ``status.json`` for ``flowspec runs``;
* :class:`Drawing` -- sample pictures;
* :class:`NaNWatchdog` -- a non-finite loss: find its node, give up after a streak;
* :class:`GracefulStop` -- Ctrl-C (and SIGTERM under torchrun): checkpoint, stop;
* :class:`StepCallback` -- a function called after every step (tests, notebooks).

Only rank 0 writes (the callbacks check ``trainer.group.is_main``); every rank
evaluates (sharded) and checks weights. A new feature of a run is a new callback.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from flowspec.checkpoint import nonfinite_tensors
from flowspec.errors import FlowspecError
from flowspec.run import layout
from flowspec.run.state import save_snapshot
from flowspec.run.status import FINISHED, RUNNING, read_status, write_status
from flowspec.train import distributed
from flowspec.train.watchdog import find_nonfinite, lr_hint

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.train.loop import Trainer


class TrainingDiverged(FlowspecError):
    """Non-finite losses or weights; the run's status records ``diverged``."""


class Callback:
    """One part of a run, called by the loop; every method is optional."""

    def start(self, t: Trainer) -> None:
        """The run directory exists; the first step is next."""

    def after_step(self, t: Trainer, step: int) -> None:
        """Right after every optimiser step (``step`` steps are done), before the step is
        logged: keep it cheap."""

    def after_log(self, t: Trainer, step: int, row: dict[str, Any]) -> None:
        """A training row was logged."""

    def end_of_epoch(self, t: Trainer, step: int, epoch: int, last: bool) -> None:
        """An epoch ended at ``step`` (``last``: the run ends here)."""

    def end_of_step(self, t: Trainer, step: int) -> None:
        """The step is logged (and its epoch closed, if it ended one)."""

    def bad_step(self, t: Trainer, step: int, bad: int) -> None:
        """The loss of ``step`` was non-finite (``bad`` in a row); the step was skipped."""

    def end(self, t: Trainer, status: str, message: str | None, step: int) -> None:
        """The run ends (``status``: finished, interrupted, diverged, failed) -- always called."""


class MetricSinks(Callback):
    """Every metric row to every sink of ``train.log`` (rank 0)."""

    def __init__(self, kinds: list[str] | None) -> None:
        from flowspec.run.sinks import check_sinks

        check_sinks(kinds)  # a missing package is reported before training starts
        self.kinds = kinds
        self.sinks: list[Any] = []

    def start(self, t: Trainer) -> None:
        from flowspec.run.sinks import open_sinks

        if t.group.is_main:
            try:
                self.sinks = open_sinks(t.run_dir, self.kinds)
            except OSError as err:
                from flowspec.oserrors import write_error

                raise write_error(t.run_dir / layout.METRICS, err) from None

    def write(self, t: Trainer, split: str, row: dict[str, Any]) -> None:
        if not t.group.is_main:
            return
        try:
            for sink in self.sinks:
                sink.write(split, row)
        except OSError as err:
            from flowspec.oserrors import write_error

            raise write_error(t.run_dir / layout.METRICS, err) from None

    def end(self, t: Trainer, status: str, message: str | None, step: int) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []


class EarlyStopping:
    """``train.early_stopping: {patience, min_delta}``: counts evaluations on the selection
    split without an improvement of more than ``min_delta``; kept in ``status.json`` so a
    resumed run goes on counting."""

    def __init__(self, cfg: dict | None, best: float, saved: dict | None = None) -> None:
        self.cfg = cfg
        saved = saved or {}
        self.ref = saved.get("ref", best)
        self.since = saved.get("evals_since_best", 0)

    def observe(self, value: float) -> bool:
        """Record one evaluation; True when the run should stop."""
        if not self.cfg:
            return False
        if value < self.ref - self.cfg["min_delta"]:
            self.ref, self.since = value, 0
            return False
        self.since += 1
        return self.since >= self.cfg["patience"]

    def state(self) -> dict | None:
        return {"ref": self.ref, "evals_since_best": self.since} if self.cfg else None


class Evaluation(Callback):
    """Evaluate every ``eval_every`` epochs; choose ``best``; stop early.

    ``best`` is chosen on the objective's selection split (validation data, or fresh
    samples for reverse KL), never on test. Without one, the periodic evaluation runs on
    test for monitoring only and no ``best`` checkpoint is written. The last epoch of a
    run (or the one that stops it early) also reports test when selection ran on
    validation.
    """

    #: what the best evaluation's row adds to ``status.json``'s ``best`` besides its
    #: value: the function evaluations of an ODE solve (``flowspec runs`` shows them)
    BEST_EXTRAS = ("nfe",)

    def __init__(self, t: Trainer, best: float = math.inf, early_stopping: dict | None = None,
                 saved_best: dict | None = None) -> None:
        """``saved_best``: a resumed run's ``status.json`` ``best`` (its step, extras)."""
        self.best, self.best_step = best, (saved_best or {}).get("step")
        self.best_extras = {k: v for k, v in (saved_best or {}).items() if k in self.BEST_EXTRAS}
        self.is_best = False
        self.last_metrics: dict[str, Any] = {}
        self.early = EarlyStopping(t.cfg.get("early_stopping"), best, early_stopping)
        if t.cfg.get("early_stopping"):
            if t.objective.selection_split is None:
                raise FlowspecError(
                    "train.early_stopping needs a validation split, and this run has none "
                    "(data.val_fraction is 0); it never stops on test",
                    hint="set data.val_fraction, e.g. --set data.val_fraction=0.1, or remove "
                         "train.early_stopping")
            if not t.cfg["eval_every"]:
                raise FlowspecError("train.early_stopping needs evaluations, but "
                                    "train.eval_every is 0",
                                    hint="set train.eval_every to 1 (every epoch) or more")

    def start(self, t: Trainer) -> None:
        if t.objective.selection_split is None and t.cfg["eval_every"]:
            t.reporter.message("no validation split (data.val_fraction is 0): test is "
                               f"evaluated for monitoring only and no {layout.BEST} is "
                               "written")

    def best_record(self, t: Trainer) -> dict | None:
        """``status.json``'s ``best``: metric, value, step, split (None before any)."""
        if not math.isfinite(self.best):
            return None
        return {"metric": t.objective.key_metric, "value": self.best, "step": self.best_step,
                "split": t.objective.selection_split, **self.best_extras}

    @staticmethod
    def split(t: Trainer) -> str:
        """The split the periodic evaluation runs on: val when it chooses ``best``."""
        return "val" if t.objective.selection_split == "val" else "test"

    def evaluate(self, t: Trainer, split: str) -> dict:
        """Metrics on ``split`` (sharded over the ranks; every rank gets rank 0's dict)."""
        def _eval() -> dict:
            distributed.sync_buffers(t.group, t.flow)
            return t.objective.evaluate(t.flow, split)

        return distributed.broadcast_object(t.group, t.with_ema(_eval))

    def end_of_epoch(self, t: Trainer, step: int, epoch: int, last: bool) -> None:
        self.is_best = False
        cfg, selection = t.cfg, t.objective.selection_split
        if not cfg["eval_every"] or (epoch % cfg["eval_every"] and not last):
            return
        split = self.split(t)
        self.last_metrics = {"step": step, "epoch": epoch, **self.evaluate(t, split)}
        if selection is not None:
            value = self.last_metrics.get(t.objective.key_metric, math.inf)
            self.is_best = value < self.best
            self.best = min(self.best, value)
            if self.is_best:
                self.best_step = step
                self.best_extras = {k: self.last_metrics[k] for k in self.BEST_EXTRAS
                                    if k in self.last_metrics}
            if self.early.observe(value):
                t.stop_reason = (
                    f"early stopping at step {step}: {t.objective.key_metric} on {selection} "
                    f"did not improve by more than {cfg['early_stopping']['min_delta']:g} in "
                    f"{self.early.since} evaluations (best {self.best:.6g} at step "
                    f"{self.best_step})")
        last = last or t.stop_reason is not None
        t.reporter.epoch(epoch, self.last_metrics, split)
        t.sinks.write(t, split, self.last_metrics)
        if last and split == "val":
            test = {"step": step, "epoch": epoch, **self.evaluate(t, "test")}
            t.reporter.epoch(epoch, test, "test")
            t.sinks.write(t, "test", test)


class Checkpoints(Callback):
    """``best`` (when the evaluation chose it), ``last`` and the resume state at every
    epoch end and every ``checkpoint_every`` steps; non-finite weights are never written
    over a good checkpoint. Rank 0 writes; every rank checks (the replicas are equal,
    so they stop together)."""

    def __init__(self, saved_step: int | None = None) -> None:
        #: the step of the last snapshot (None: none yet)
        self.saved_step = saved_step

    def save(self, t: Trainer, step: int, is_best: bool = False,
             metrics: dict | None = None) -> None:
        """A snapshot at ``step`` with ``metrics`` (default: the last evaluation)."""
        weights = t.flow.state_dict()
        bad = nonfinite_tensors(weights)
        if bad:
            raise TrainingDiverged(
                f"training diverged: at step {step} {len(bad)} weight tensor(s) are NaN or "
                f"infinite ({', '.join(bad[:3])}); the previous checkpoint is kept",
                hint=lr_hint(t.cfg, t.run_dir, self.saved_step))
        if t.group.is_main:
            info = {"step": step, "epoch": step / t.steps_per_epoch,
                    "metrics": t.evaluation.last_metrics if metrics is None else metrics,
                    "seed": t.seed, "run_id": t.run_id}
            save_snapshot(t.run_dir, weights=weights,
                          ema=t.ema.state if t.ema is not None else None,
                          spec_yaml=t.spec_yaml, info=info, is_best=is_best,
                          state={"best": t.evaluation.best,
                                 "scheduler": t.sched.state_dict(),
                                 "grad_scaler": t.precision.state_dict()},
                          optimizer=t.opt)
        self.saved_step = step

    def end_of_step(self, t: Trainer, step: int) -> None:
        every = t.cfg["checkpoint_every"]
        if every and step % every == 0 and not t.is_epoch_end(step):
            self.save(t, step)

    def end_of_epoch(self, t: Trainer, step: int, epoch: int, last: bool) -> None:
        self.save(t, step, t.evaluation.is_best)


class StatusFile(Callback):
    """``status.json``: running (at start, every 5 s of logging, every epoch), then how
    the run ended, with progress, best, elapsed time and the early-stopping counters."""

    def __init__(self) -> None:
        self.elapsed_before = 0.0
        self.session_start = time.time()
        self.written = 0.0

    def write(self, t: Trainer, status: str, step: int, **extra: Any) -> None:
        if not t.group.is_main:
            return
        now = time.time()
        write_status(t.run_dir, status=status, step=step, total=t.total,
                     best=t.evaluation.best_record(t),
                     elapsed_s=self.elapsed_before + (now - self.session_start),
                     early_stopping=t.evaluation.early.state(), **extra)
        self.written = now

    def start(self, t: Trainer) -> None:
        previous = read_status(t.run_dir) if t.group.is_main else {}
        self.elapsed_before = float(previous.get("elapsed_s") or 0.0)
        self.session_start = time.time()
        self.write(t, RUNNING, t.start_step,
                   started=previous.get("started", self.session_start), message=None)

    def after_log(self, t: Trainer, step: int, row: dict[str, Any]) -> None:
        if time.time() - self.written > 5.0:  # progress for `flowspec runs`
            self.write(t, RUNNING, step)

    def end_of_epoch(self, t: Trainer, step: int, epoch: int, last: bool) -> None:
        self.write(t, RUNNING, step)

    def end(self, t: Trainer, status: str, message: str | None, step: int) -> None:
        # a run that did not finish is recorded at its last checkpoint's step
        at = step if status == FINISHED else (t.checkpoints.saved_step or 0)
        try:
            self.write(t, status, at, message=message)
        except OSError:  # pragma: no cover - never hide the original error
            pass


class Drawing(Callback):
    """A picture of samples every ``sample_every`` epochs (and at the last), titled with
    the run's step and last evaluation; a picture that cannot be drawn is a message --
    said once, not at every epoch (the same reason holds at the next)."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def _once(self, t: Trainer, text: str) -> None:
        if text not in self.said:
            self.said.add(text)
            t.reporter.message(text + " (said once; not repeated at later epochs)")

    def end_of_epoch(self, t: Trainer, step: int, epoch: int, last: bool) -> None:
        every = t.cfg["sample_every"]
        last = last or t.stop_reason is not None
        if not every or (epoch % every and not last) or not t.group.is_main:
            return

        def _draw() -> None:
            from flowspec.viz.notes import collect_warnings

            torch.manual_seed(t.spec.sample["seed"])
            t.flow.checkpoint_info = {"step": min(epoch * t.steps_per_epoch, t.total),
                                      "metrics": t.evaluation.last_metrics}
            with collect_warnings() as notes:
                path = t.objective.draw(t.flow, layout.samples_path(t.run_dir, epoch),
                                        t.spec.sample["n"], t.spec.sample["temperature"])
            t.reporter.message(f"samples: {path}")
            for note in notes:
                t.reporter.message(f"warning: {note}")

        try:
            t.with_ema(_draw)
        except FlowspecError as err:
            self._once(t, f"no samples drawn: {err}")


class NaNWatchdog(Callback):
    """A non-finite loss: find the node it came from (first of a streak only), report
    it; give up after ``max_bad_steps`` in a row with a hint to resume at a lower lr."""

    def __init__(self) -> None:
        self.cause = ""

    def bad_step(self, t: Trainer, step: int, bad: int) -> None:
        if bad == 1:
            self.cause = self.diagnose(t, step).describe()
        t.reporter.message(f"step {step}: non-finite loss, step skipped ({bad} in a row)"
                           + (f"; {self.cause}" if self.cause and bad == 1 else ""))
        if bad >= t.cfg["max_bad_steps"]:
            raise TrainingDiverged(
                f"training diverged: {bad} consecutive non-finite losses at step {step}"
                + (f"; at the first, {self.cause}" if self.cause else ""),
                hint=lr_hint(t.cfg, t.run_dir, t.checkpoints.saved_step))

    @staticmethod
    def diagnose(t: Trainer, step: int):
        """Recompute the loss of ``step`` once with per-node finiteness checks (no
        gradients; RNG re-seeded as in the step, buffers restored)."""
        t.flow.train()
        torch.manual_seed(t.step_seed(step))

        def compute():
            with t.precision.autocast():
                return t.objective.loss(t.flow, step, t.seed)

        return find_nonfinite(t.flow, compute)


class GracefulStop(Callback):
    """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once.

    A distributed worker treats SIGTERM the same way: torchrun answers a Ctrl-C by
    sending its workers SIGTERM (SIGKILL 30 s later), which leaves them time to agree
    on a step and let rank 0 checkpoint.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def start(self, t: Trainer) -> None:
        if threading.current_thread() is threading.main_thread():
            sigs = [signal.SIGINT] + ([signal.SIGTERM] if t.group.enabled else [])
            self._old = {sig: signal.signal(sig, self._handle) for sig in sigs}

    def end(self, t: Trainer, status: str, message: str | None, step: int) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class StepCallback(Callback):
    """``fn(step)`` after every optimiser step (tests use it to interrupt a run)."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        self.fn = fn

    def after_step(self, t: Trainer, step: int) -> None:
        self.fn(step)

