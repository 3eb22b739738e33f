"""The training loop: one :class:`Trainer`, resumable to the bit.

Determinism without saving RNG streams: the data order of epoch ``e`` comes
from a generator seeded by ``(seed, e)``, and the global RNG (dequantization
noise, prior samples) is re-seeded from ``(seed, step)`` before every step. A
run killed at any point and resumed from its last checkpoint therefore replays
exactly the steps an uninterrupted run would have taken.

The trainer is split into small methods with one job each -- set-up
(``_setup_fresh`` / ``_setup_resume``), one optimisation step (``train_step``),
logging a row (``log_row``), the end of an epoch (``end_of_epoch``: evaluate,
choose ``best``, checkpoint, draw), checkpoint writing (``save``) -- so that
features (distributed data parallel, mixed precision, extra metric sinks,
early stopping) each change one place.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowspec.api import build_flow
from flowspec.checkpoint import (
    check_weights,
    clean_stale_temps,
    load_weights,
    nonfinite_tensors,
    save_checkpoint,
    save_state,
)
from flowspec.errors import CheckpointError, FlowspecError
from flowspec.objectives import build_objective
from flowspec.runs import (
    DIVERGED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    read_status,
    write_status,
)
from flowspec.train import distributed
from flowspec.train.optim import EMA, build_optimizer, build_scheduler
from flowspec.train.precision import Precision, resolve_precision
from flowspec.train.report import PlainReporter, Reporter, SilentReporter
from flowspec.train.resume import (
    STATE_FILE,
    best_so_far,
    read_resume,
    spec_digest,
    state_tensors,
    truncate_metrics,
)
from flowspec.train.resume_overrides import apply_resume_overrides, record_resume
from flowspec.train.rundir import make_run_dir, new_run_id, write_run_files
from flowspec.train.sinks import check_sinks, open_sinks
from flowspec.train.watchdog import find_nonfinite, lr_hint


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the trained flow (EMA weights swapped in when the run keeps an EMA), in eval mode
    flow: Any = None
    #: why the run stopped before its last step (early stopping), else None
    stop_reason: str | None = None
    #: this process's rank (0 in a single process; only rank 0 writes and reports)
    rank: int = 0


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FlowspecError("--device cuda was asked for, but no CUDA device is available",
                            hint="use --device cpu or auto")
    return torch.device(device)


def _scalar(v: Any) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The global RNG's seed for one step; each rank of a distributed run has its own."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{idx}/{k}"] = v
            else:
                scalars[f"{idx}/{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim/"):
            _, idx, k = key.split("/", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in info["scalars"].items():
        idx, k = key.split("/", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


class TrainingDiverged(FlowspecError):
    """Non-finite losses or weights; the run's status records ``diverged``."""


class _GracefulStop:
    """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once.

    A distributed worker treats SIGTERM the same way: torchrun answers a Ctrl-C by
    sending its workers SIGTERM (SIGKILL 30 s later), which leaves them time to agree
    on a step and let rank 0 checkpoint.
    """

    def __init__(self, also_sigterm: bool = False) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            sigs = [signal.SIGINT] + ([signal.SIGTERM] if also_sigterm else [])
            self._old = {sig: signal.signal(sig, self._handle) for sig in sigs}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """Trains the flow of one spec (or resumes a run directory); :meth:`run` does it.

    ``resume`` is a run directory holding ``last.safetensors`` and its state
    file; training continues in that directory. ``on_step(step)`` is called
    after every optimiser step (tests use it to interrupt a run). ``compile``
    overrides ``train.compile``. Started by torchrun (or ``train(nproc=N)``), each
    process is one data-parallel rank (:mod:`flowspec.train.distributed`).
    """

    def __init__(
        self,
        spec: Any,
        *,
        out_root: str | Path = "runs",
        device: str = "auto",
        data_dir: str | Path | None = None,
        resume: str | Path | None = None,
        seed: int | None = None,
        overrides: Any = None,
        reporter: Reporter | None = None,
        on_step: Callable[[int], None] | None = None,
        compile: bool | None = None,
    ):
        self.group, rank_device = distributed.setup(device)
        self.reporter = (reporter or PlainReporter()) if self.group.is_main else SilentReporter()
        self.compile = compile  # None: the spec's train.compile (a resumed run may add it)
        self.on_step = on_step
        self.device = rank_device or resolve_device(device)
        self.start_step, self.best = 0, math.inf
        resumed = (self._read_resume(Path(resume), overrides) if resume is not None
                   else None)
        if resumed is not None:
            spec, seed = resumed["spec"], resumed["info"]["seed"]
        self.spec = spec
        self.spec_yaml = resumed["spec_yaml"] if resumed is not None else spec.to_yaml()
        self.cfg = spec.train
        self.seed = self.cfg["seed"] if seed is None else seed
        check_sinks(self.cfg["log"])

        torch.manual_seed(self.seed)
        layout = torch.channels_last if self.cfg["channels_last"] else torch.preserve_format
        self.flow = build_flow(spec).to(self.device, memory_format=layout)
        self.objective = build_objective(spec, self.flow, data_dir, self.device,
                                         shard=distributed.shard(self.group))
        self.precision = Precision(resolve_precision(self.cfg, self.reporter.message),
                                   self.device)
        self.train_view = self._train_view()
        self.steps_per_epoch = self.objective.steps_per_epoch
        self.total = self.cfg["steps"] or self.cfg["epochs"] * self.steps_per_epoch
        self.opt = build_optimizer(self.flow.parameters(), self.cfg)
        self.sched = build_scheduler(self.opt, self.cfg, self.total)
        self.ema = EMA(self.flow, self.cfg["ema"]) if self.cfg["ema"] else None
        self.params = [p for p in self.flow.parameters() if p.requires_grad]
        self.last_metrics: dict[str, Any] = {}
        self._check_early_stopping()
        #: why the run stops before ``total`` (early stopping), else None
        self.stop_reason: str | None = None
        self.best_step: int | None = None
        self._es_ref, self._es_since = math.inf, 0
        self._status_time = 0.0
        if resumed is not None:
            self._setup_resume(Path(resume), resumed)
        else:
            self._setup_fresh(out_root, overrides)

    # -- set-up ----------------------------------------------------------------------
    def _train_view(self) -> distributed.TrainView:
        """The flow as the loss calls it: through DDP (several ranks) and torch.compile."""
        entry: Any = distributed.wrap(self.flow, self.group, self.device)
        if self.cfg.get("compile") if self.compile is None else self.compile:
            from flowspec.train.torch_compile import CompiledOrEager

            entry = CompiledOrEager(entry, self.reporter.message)
        return distributed.TrainView(self.flow, entry)

    @staticmethod
    def _read_resume(run_dir: Path, overrides: Any = None) -> dict[str, Any]:
        """One consistent snapshot from the run's state file (see flowspec.train.resume),
        with the resume ``overrides`` applied to its spec (only the keys
        :mod:`flowspec.train.resume_overrides` allows)."""
        resumed = read_resume(run_dir)
        stored = resumed["ckpt"]["spec"]
        spec, changes = apply_resume_overrides(stored, overrides, run_dir,
                                               step=resumed["info"].get("step"))
        resumed.update(spec=spec if changes else resumed["spec"],
                       spec_yaml=spec.to_yaml() if changes else stored,
                       overrides=list(overrides or []), changes=changes)
        return resumed

    def _setup_fresh(self, out_root: str | Path, overrides: Any) -> None:
        info = {"seed": self.seed, "device": str(self.device), "spec_source": self.spec.source}
        # e.g. fit data statistics (standardize), pin data files
        spec, data = self.objective.prepare_fresh_run(self.flow, self.spec, self.reporter.message)
        if data is not None:
            info["data"] = data
        if spec is not self.spec:
            self.spec, self.flow.spec, self.spec_yaml = spec, spec, spec.to_yaml()
        self._saved_step: int | None = None
        run_dir = run_id = None
        if self.group.is_main:  # rank 0 names the run; every rank uses that name
            run_dir = make_run_dir(out_root, self.spec.name, self.spec_yaml)
            run_id = new_run_id()
            write_run_files(run_dir, self.spec_yaml, overrides,
                            {**info, "run_id": run_id, "processes": self.group.world})
        self.run_dir, self.run_id = distributed.broadcast_object(self.group, (run_dir, run_id))

    def _setup_resume(self, run_dir: Path, resumed: dict[str, Any]) -> None:
        ckpt, info = resumed["ckpt"], resumed["info"]
        where = str(run_dir / STATE_FILE)
        self.run_dir = run_dir
        self.run_id = info.get("run_id") or new_run_id()
        if self.group.is_main:  # rank 0 alone writes in the run directory
            clean_stale_temps(run_dir)
        load_weights(self.flow, ckpt["state"], where)
        if self.ema is not None and ckpt["ema"] is not None:
            check_weights(self.flow, ckpt["ema"], where + " (EMA weights)")
            self.ema.state = {k: v.to(self.device).clone() for k, v in ckpt["ema"].items()}
        try:
            _load_optimizer(self.opt,
                            {k: v.to(self.device) for k, v in resumed["state"].items()},
                            info["optimizer"])
            self.sched.load_state_dict(info["scheduler"])
            self.precision.load_state_dict(info.get("grad_scaler"))
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise CheckpointError(f"{where}: the optimizer state does not fit this model "
                                  f"({err})", hint="the file was altered or mixed with "
                                  "another run's") from None
        self.start_step = info["step"]
        self._saved_step = self.start_step
        self.best = best_so_far(run_dir, info["best"], self.start_step,
                                self.objective.key_metric)
        dropped = (truncate_metrics(run_dir / "metrics.jsonl", self.start_step)
                   if self.group.is_main else 0)
        if dropped:
            self.reporter.message(f"metrics.jsonl: {dropped} row(s) past step "
                                  f"{self.start_step} dropped (they are replayed)")
        if "lr" in resumed["changes"]:  # after the optimizer state, which carries the old lr
            self.set_lr(resumed["changes"]["lr"][1])
        status = read_status(run_dir)
        es = status.get("early_stopping") or {}
        self._es_ref, self._es_since = es.get("ref", self.best), es.get("evals_since_best", 0)
        self.best_step = (status.get("best") or {}).get("step")
        if resumed["changes"]:  # a consistent snapshot of the new spec before spec.yaml
            self.save(self.start_step, resumed["info"].get("metrics") or {}, False)
        if resumed["overrides"]:
            record_resume(run_dir, self.start_step, resumed["overrides"], resumed["changes"],
                          self.spec_yaml)

    def set_lr(self, lr: float) -> None:
        """Make ``lr`` the base learning rate from now on (the schedule's factor still
        applies): the optimizer's param groups and the scheduler's base rates."""
        for group in self.opt.param_groups:
            group["initial_lr"] = lr
        self.sched.base_lrs = [lr] * len(self.opt.param_groups)
        factors = [fn(self.sched.last_epoch) for fn in self.sched.lr_lambdas]
        for group, factor in zip(self.opt.param_groups, factors):
            group["lr"] = lr * factor
        self.sched._last_lr = [g["lr"] for g in self.opt.param_groups]

    def _check_early_stopping(self) -> None:
        es = self.cfg.get("early_stopping")
        if not es:
            return
        if self.objective.selection_split is None:
            raise FlowspecError(
                "train.early_stopping needs a validation split, and this run has none "
                "(data.val_fraction is 0); it never stops on test",
                hint="set data.val_fraction, e.g. --set data.val_fraction=0.1, or remove "
                     "train.early_stopping")
        if not self.cfg["eval_every"]:
            raise FlowspecError("train.early_stopping needs evaluations, but train.eval_every "
                                "is 0", hint="set train.eval_every to 1 (every epoch) or more")

    # -- status (flowspec runs) ----------------------------------------------------------
    def write_status(self, status: str, step: int, **extra: Any) -> None:
        """Record the run's state in ``status.json`` (see :mod:`flowspec.runs`); rank 0 only."""
        if not self.group.is_main:
            return
        now = time.time()
        best = None
        if math.isfinite(self.best):
            best = {"metric": self.objective.key_metric, "value": self.best,
                    "step": self.best_step, "split": self.objective.selection_split}
        fields: dict[str, Any] = dict(
            status=status, step=step, total=self.total, best=best,
            elapsed_s=self._elapsed_before + (now - self._session_start),
            early_stopping={"ref": self._es_ref, "evals_since_best": self._es_since}
            if self.cfg.get("early_stopping") else None, **extra)
        write_status(self.run_dir, **fields)
        self._status_time = now

    # -- checkpoints -------------------------------------------------------------------
    def save(self, step: int, metrics: dict, is_best: bool) -> None:
        """``best`` (when ``is_best``), ``last``, then the resume state -- last, as the commit
        point: it alone holds everything a resume needs (weights, EMA, optimizer, counters,
        spec), so a kill at any moment leaves a consistent snapshot. Non-finite weights are
        never written over a good checkpoint. Rank 0 writes; every rank checks (the
        replicas are equal, so they stop together)."""
        weights = self.flow.state_dict()
        bad = nonfinite_tensors(weights)
        if bad:
            raise TrainingDiverged(
                f"training diverged: at step {step} {len(bad)} weight tensor(s) are NaN or "
                f"infinite ({', '.join(bad[:3])}); the previous checkpoint is kept",
                hint=lr_hint(self.cfg, self.run_dir, self._saved_step))
        if not self.group.is_main:
            return
        info = {"step": step, "epoch": step / self.steps_per_epoch, "metrics": metrics,
                "seed": self.seed, "run_id": self.run_id,
                "spec_sha256": spec_digest(self.spec_yaml)}
        ema_state = self.ema.state if self.ema is not None else None
        clean_stale_temps(self.run_dir)
        if is_best:
            save_checkpoint(self.run_dir / "best.safetensors", weights,
                            self.spec_yaml, ema_state=ema_state, info=info)
        save_checkpoint(self.run_dir / "last.safetensors", weights,
                        self.spec_yaml, ema_state=ema_state, info=info)
        opt_tensors, opt_info = _optimizer_tensors(self.opt)
        save_state(self.run_dir / STATE_FILE, state_tensors(weights, ema_state, opt_tensors),
                   {**info, "best": self.best, "optimizer": opt_info,
                    "scheduler": self.sched.state_dict(), "spec": self.spec_yaml,
                    "grad_scaler": self.precision.state_dict()})
        self._saved_step = step

    # -- evaluation and pictures -----------------------------------------------------
    def _with_ema(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` with the EMA weights swapped in (if the run keeps an EMA)."""
        raw = self.ema.swap_in() if self.ema is not None else None
        try:
            return fn()
        finally:
            if raw is not None:
                self.flow.load_state_dict(raw)

    def evaluate(self, split: str) -> dict:
        """Metrics on ``split`` (sharded over the ranks; every rank gets rank 0's dict)."""
        def _eval() -> dict:
            distributed.sync_buffers(self.group, self.flow)
            return self.objective.evaluate(self.flow, split)

        return distributed.broadcast_object(self.group, self._with_ema(_eval))

    def draw(self, epoch: int) -> None:
        if not self.group.is_main:
            return

        def _draw() -> None:
            from flowspec.viz.notes import collect_warnings

            torch.manual_seed(self.spec.sample["seed"])
            # pictures are titled with the run's step and its last evaluation
            self.flow.checkpoint_info = {"step": min(epoch * self.steps_per_epoch, self.total),
                                         "metrics": self.last_metrics}
            with collect_warnings() as notes:
                path = self.objective.draw(
                    self.flow, self.run_dir / "samples" / f"epoch_{epoch:04d}.png",
                    self.spec.sample["n"], self.spec.sample["temperature"])
            self.reporter.message(f"samples: {path}")
            for note in notes:
                self.reporter.message(f"warning: {note}")

        try:
            self._with_ema(_draw)
        except FlowspecError as err:
            self.reporter.message(f"no samples drawn: {err}")

    # -- one step ------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[torch.Tensor, dict, Any] | None:
        """One optimiser step; ``(loss, stats, grad_norm)``, or None if the loss was
        non-finite and the step was skipped."""
        self.flow.train()
        torch.manual_seed(step_seed(self.seed, step, self.group.rank))
        with self.precision.autocast():
            loss, stats = self.objective.loss(self.train_view, step, self.seed)
        # Every rank skips together (a rank alone in backward would wait forever).
        if distributed.any_true(self.group, ~torch.isfinite(loss), self.device):
            return None
        self.opt.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        grad_norm = self.precision.step(self.opt, self.params, self.cfg["grad_clip"])
        return loss, stats, grad_norm

    def on_bad_step(self, step: int, bad: int) -> None:
        """A non-finite loss: find the node it came from (first of a streak only), report it;
        give up after ``max_bad_steps`` in a row with a hint to resume at a lower lr."""
        if bad == 1:
            self._bad_cause = self.diagnose_bad_step(step).describe()
        cause = getattr(self, "_bad_cause", "")
        self.reporter.message(f"step {step}: non-finite loss, step skipped ({bad} in a row)"
                              + (f"; {cause}" if cause and bad == 1 else ""))
        if bad >= self.cfg["max_bad_steps"]:
            raise TrainingDiverged(
                f"training diverged: {bad} consecutive non-finite losses at step {step}"
                + (f"; at the first, {cause}" if cause else ""),
                hint=lr_hint(self.cfg, self.run_dir, self._saved_step))

    def diagnose_bad_step(self, step: int):
        """Recompute the loss of ``step`` once with per-node finiteness checks (no gradients;
        RNG re-seeded as in :meth:`train_step`, buffers restored)."""
        self.flow.train()
        torch.manual_seed(step_seed(self.seed, step, self.group.rank))

        def compute():
            with self.precision.autocast():
                return self.objective.loss(self.flow, step, self.seed)

        return find_nonfinite(self.flow, compute)

    # -- logging ------------------------------------------------------------------------
    def log_row(self, step: int, loss: torch.Tensor, stats: dict, grad_norm: Any,
                examples_per_s: float) -> dict:
        row = {"step": step, "epoch": step / self.steps_per_epoch,
               "loss": float(loss.detach()), "lr": self.sched.get_last_lr()[0],
               "examples_per_s": examples_per_s, **{k: _scalar(v) for k, v in stats.items()}}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        row.update(self.objective.train_metrics(row, self.flow))
        self.reporter.log(step, row)
        self.write_metrics("train", row)
        if time.time() - self._status_time > 5.0:  # progress for `flowspec runs`
            self.write_status(RUNNING, step)
        return row

    def write_metrics(self, split: str, row: dict) -> None:
        """One row to every metric sink (metrics.jsonl, and csv / tensorboard if asked)."""
        if not self.group.is_main:  # rank 0 alone writes metrics
            return
        try:
            for sink in self.sinks:
                sink.write(split, row)
        except OSError as err:
            from flowspec.oserrors import write_error

            raise write_error(self.run_dir / "metrics.jsonl", err) from None

    # -- epochs -------------------------------------------------------------------------
    def end_of_epoch(self, step: int) -> None:
        """Evaluate (every ``eval_every`` epochs), choose ``best``, stop early, checkpoint,
        draw samples.

        ``best`` is chosen on the objective's selection split (validation data, or fresh
        samples for reverse KL), never on test. Without one, the periodic evaluation runs
        on test for monitoring only and no ``best`` checkpoint is written. Early stopping
        (``train.early_stopping: {patience, min_delta}``) counts evaluations on that split
        without an improvement of more than ``min_delta``. The last epoch of a run (or
        the one that stops it early) also reports test when selection ran on validation.
        """
        epoch = math.ceil(step / self.steps_per_epoch)
        is_best = False
        cfg, last = self.cfg, step == self.total
        selection = self.objective.selection_split
        if cfg["eval_every"] and (epoch % cfg["eval_every"] == 0 or last):
            split = "val" if selection == "val" else "test"
            self.last_metrics = {"step": step, "epoch": epoch, **self.evaluate(split)}
            if selection is not None:
                value = self.last_metrics.get(self.objective.key_metric, math.inf)
                is_best = value < self.best
                self.best = min(self.best, value)
                if is_best:
                    self.best_step = step
                self._early_stopping(step, value)
            last = last or self.stop_reason is not None
            self.reporter.epoch(epoch, self.last_metrics, split)
            self.write_metrics(split, self.last_metrics)
            if last and split == "val":
                test = {"step": step, "epoch": epoch, **self.evaluate("test")}
                self.reporter.epoch(epoch, test, "test")
                self.write_metrics("test", test)
        self.save(step, self.last_metrics, is_best)
        self.write_status(RUNNING, step)
        if cfg["sample_every"] and (epoch % cfg["sample_every"] == 0 or last):
            self.draw(epoch)

    def _early_stopping(self, step: int, value: float) -> None:
        es = self.cfg.get("early_stopping")
        if not es:
            return
        if value < self._es_ref - es["min_delta"]:
            self._es_ref, self._es_since = value, 0
            return
        self._es_since += 1
        if self._es_since >= es["patience"]:
            self.stop_reason = (
                f"early stopping at step {step}: {self.objective.key_metric} on "
                f"{self.objective.selection_split} did not improve by more than "
                f"{es['min_delta']:g} in {self._es_since} evaluations (best {self.best:.6g} "
                f"at step {self.best_step})")

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, spe = self.cfg, self.steps_per_epoch
        self.sinks = []
        if self.group.is_main:  # rank 0 alone writes in the run directory
            try:
                self.sinks = open_sinks(self.run_dir, cfg["log"])
            except OSError as err:
                from flowspec.oserrors import write_error

                raise write_error(self.run_dir / "metrics.jsonl", err) from None
        previous = read_status(self.run_dir) if self.group.is_main else {}
        self._elapsed_before = float(previous.get("elapsed_s") or 0.0)
        self._session_start = time.time()
        self.write_status(RUNNING, self.start_step, started=previous.get("started",
                                                                         self._session_start),
                          message=None)
        self.reporter.start(run_dir=self.run_dir, total_steps=self.total,
                            start_step=self.start_step, steps_per_epoch=spe,
                            device=str(self.device), loss_unit=self.objective.loss_unit)
        if self.objective.selection_split is None and cfg["eval_every"]:
            self.reporter.message("no validation split (data.val_fraction is 0): test is "
                                  "evaluated for monitoring only and no best.safetensors is "
                                  "written")
        for warning in self.objective.start_warnings():
            self.reporter.warning(warning)
        bad, t0, seen = 0, time.perf_counter(), 0
        step = self.start_step
        stop = _GracefulStop(also_sigterm=self.group.enabled)
        try:
            while step < self.total and self.stop_reason is None:
                if distributed.stop_agreed(self.group, stop.requested, step, self.device):
                    self.save(step, self.last_metrics, False)
                    raise KeyboardInterrupt
                result = self.train_step(step)
                if result is None:
                    bad += 1
                    self.on_bad_step(step, bad)
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
                if self.on_step is not None:
                    self.on_step(step)
                if step % cfg["log_every"] == 0 or step == self.total:
                    now = time.perf_counter()
                    loss, stats, rate = distributed.reduce_log(
                        self.group, loss, stats, seen / max(now - t0, 1e-9), self.device)
                    self.log_row(step, loss, stats, grad_norm, rate)
                    t0, seen = now, 0
                if step % spe == 0 or step == self.total:
                    self.end_of_epoch(step)
                elif cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0:
                    self.save(step, self.last_metrics, False)
        except KeyboardInterrupt:
            self.reporter.message(f"interrupted at step {step}; resume with --resume "
                                  f"{self.run_dir}")
            self._final_status(INTERRUPTED, f"interrupted at step {step}")
            raise
        except TrainingDiverged as err:
            self._final_status(DIVERGED, str(err))
            raise
        except BaseException as err:
            self._final_status(FAILED, f"{type(err).__name__}: {err}")
            raise
        finally:
            stop.restore()
            for sink in self.sinks:
                sink.close()
            self.reporter.close()
            distributed.teardown(self.group)
        if self.stop_reason is not None:
            self.reporter.message(self.stop_reason)
        self._final_status(FINISHED, self.stop_reason, step)
        if self.ema is not None:
            self.ema.swap_in()
        return TrainResult(run_dir=self.run_dir, step=step, metrics=self.last_metrics,
                           flow=self.flow.eval(), stop_reason=self.stop_reason,
                           rank=self.group.rank)

    def _final_status(self, status: str, message: str | None, step: int | None = None) -> None:
        """The run's closing status, at ``step`` or else at its last checkpoint's step."""
        try:
            self.write_status(status, step if step is not None else (self._saved_step or 0),
                              message=message)
        except OSError:  # pragma: no cover - never hide the original error
            pass


def train(spec: Any, *, nproc: int = 1, make_reporter: Callable[[], Reporter] | None = None,
          **kwargs: Any) -> TrainResult:
    """Train the flow of ``spec`` (a loaded :class:`~flowspec.spec.Spec`); see :class:`Trainer`
    for the keyword arguments.

    ``nproc > 1`` spawns that many local data-parallel workers (one GPU each on CUDA,
    gloo on CPU; see :mod:`flowspec.train.distributed`); ``make_reporter`` (a picklable
    callable) then builds rank 0's reporter inside its worker. The returned flow is
    loaded from the run's last checkpoint.
    """
    if nproc <= 1:
        if make_reporter is not None and kwargs.get("reporter") is None:
            kwargs["reporter"] = make_reporter()
        return Trainer(spec, **kwargs).run()
    if distributed.launched_world() > 1:
        raise FlowspecError(f"--nproc {nproc} inside a torchrun worker (WORLD_SIZE is set)",
                            hint="let torchrun start the processes, or use --nproc alone")
    distributed.check_launch(nproc, kwargs.get("device", "auto"),
                             spec.train["batch_size"] if spec is not None else None)
    run_dir, step, metrics = distributed.launch(nproc, _train_worker, spec, kwargs,
                                                make_reporter)
    import flowspec

    return TrainResult(run_dir=Path(run_dir), step=step, metrics=metrics,
                       flow=flowspec.load(Path(run_dir) / "last.safetensors"))


def _train_worker(spec: Any, kwargs: dict, make_reporter: Callable[[], Reporter] | None):
    """One ``--nproc`` worker: a Trainer like any torchrun-started one; rank 0's summary."""
    if make_reporter is not None and kwargs.get("reporter") is None:
        kwargs = {**kwargs, "reporter": make_reporter()}
    result = Trainer(spec, **kwargs).run()
    return str(result.run_dir), result.step, result.metrics
