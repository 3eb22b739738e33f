"""The training loop: one function, resumable to the bit.

Determinism without saving RNG streams: the data order of epoch ``e`` comes
from a generator seeded by ``(seed, e)``, and the global RNG (dequantization
noise, prior samples) is re-seeded from ``(seed, step)`` before every step. A
run killed at any point and resumed from its last checkpoint therefore replays
exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import json
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
from flowspec.checkpoint import read_checkpoint, read_state, save_checkpoint, save_state
from flowspec.errors import CheckpointError, FlowspecError
from flowspec.train.objectives import build_objective
from flowspec.train.optim import EMA, build_optimizer, build_scheduler
from flowspec.train.report import PlainReporter, Reporter
from flowspec.train.rundir import make_run_dir, write_run_files


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FlowspecError("--device cuda was asked for, but no CUDA device is available",
                            hint="use --device cpu or auto")
    return torch.device(device)


def _scalar(v: Any) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2**63 - 1)


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


class _GracefulStop:
    """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def train(
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
) -> TrainResult:
    """Train the flow of ``spec`` (a loaded :class:`~flowspec.spec.Spec`).

    ``resume`` is a run directory holding ``last.safetensors`` and its state
    file; training continues in that directory. ``on_step(step)`` is called
    after every optimiser step (tests use it to interrupt a run).
    """
    reporter = reporter or PlainReporter()
    dev = resolve_device(device)
    start_step, best, resumed_info = 0, math.inf, None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "last.safetensors").is_file():
            raise CheckpointError(f"{run_dir}: nothing to resume (no last.safetensors)",
                                  hint="pass the run directory printed by `flowspec train`")
        ckpt = read_checkpoint(run_dir / "last.safetensors")
        spec_yaml = ckpt["spec"]
        from flowspec.spec import load_spec

        spec = load_spec(spec_yaml)
        cfg = spec.train
        state_tensors, resumed_info = read_state(run_dir / "last.state.safetensors")
        seed = resumed_info["seed"]
    else:
        spec_yaml = spec.to_yaml()
        cfg = spec.train
    seed = cfg["seed"] if seed is None else seed

    torch.manual_seed(seed)
    flow = build_flow(spec).to(dev)
    objective = build_objective(spec, flow, data_dir, dev)
    spe = objective.steps_per_epoch
    total = cfg["steps"] or cfg["epochs"] * spe
    opt = build_optimizer(flow.parameters(), cfg)
    sched = build_scheduler(opt, cfg, total)
    ema = EMA(flow, cfg["ema"]) if cfg["ema"] else None

    if resumed_info is not None:
        flow.load_state_dict(ckpt["state"])
        if ema is not None and ckpt["ema"] is not None:
            ema.state = {k: v.to(dev) for k, v in ckpt["ema"].items()}
        _load_optimizer(opt, {k: v.to(dev) for k, v in state_tensors.items()},
                        resumed_info["optimizer"])
        sched.load_state_dict(resumed_info["scheduler"])
        start_step, best = resumed_info["step"], resumed_info["best"]
    else:
        run_dir = make_run_dir(out_root, spec.name, spec_yaml)
        write_run_files(run_dir, spec_yaml, overrides,
                        {"seed": seed, "device": str(dev), "spec_source": spec.source})

    def checkpoint(step: int, metrics: dict, is_best: bool) -> None:
        info = {"step": step, "epoch": step / spe, "metrics": metrics, "seed": seed}
        ema_state = ema.state if ema is not None else None
        save_checkpoint(run_dir / "last.safetensors", flow.state_dict(), spec_yaml,
                        ema_state=ema_state, info=info)
        opt_tensors, opt_info = _optimizer_tensors(opt)
        save_state(run_dir / "last.state.safetensors", opt_tensors,
                   {"step": step, "best": best, "seed": seed, "optimizer": opt_info,
                    "scheduler": sched.state_dict()})
        if is_best:
            save_checkpoint(run_dir / "best.safetensors", flow.state_dict(), spec_yaml,
                            ema_state=ema_state, info=info)

    def evaluate() -> dict:
        raw = ema.swap_in() if ema is not None else None
        try:
            return objective.evaluate(flow)
        finally:
            if raw is not None:
                flow.load_state_dict(raw)

    def draw(epoch: int) -> None:
        raw = ema.swap_in() if ema is not None else None
        try:
            torch.manual_seed(spec.sample["seed"])
            path = objective.draw(flow, run_dir / "samples" / f"epoch_{epoch:04d}.png",
                                  spec.sample["n"], spec.sample["temperature"])
            reporter.message(f"samples: {path}")
        except FlowspecError as err:
            reporter.message(f"no samples drawn: {err}")
        finally:
            if raw is not None:
                flow.load_state_dict(raw)

    metrics_file = (run_dir / "metrics.jsonl").open("a")
    reporter.start(run_dir=run_dir, total_steps=total, start_step=start_step,
                   steps_per_epoch=spe, device=str(dev))
    last_metrics: dict[str, Any] = {}
    params = [p for p in flow.parameters() if p.requires_grad]
    clip = cfg["grad_clip"]
    amp = cfg["amp"] and dev.type == "cuda"
    bad, t0, seen = 0, time.perf_counter(), 0
    step = start_step
    stop = _GracefulStop()
    try:
        while step < total:
            if stop.requested:
                checkpoint(step, last_metrics, False)
                raise KeyboardInterrupt
            flow.train()
            torch.manual_seed(step_seed(seed, step))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss, stats = objective.loss(flow, step, seed)
            if not torch.isfinite(loss):
                bad += 1
                reporter.message(f"step {step}: non-finite loss, step skipped ({bad} in a row)")
                if bad >= cfg["max_bad_steps"]:
                    raise FlowspecError(
                        f"training diverged: {bad} consecutive non-finite losses at step {step}",
                        hint="lower train.optimizer lr, add train.warmup_steps or train.grad_clip")
                step += 1
                sched.step()
                continue
            bad = 0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip else None
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(step)
            step += 1
            seen += objective.batch_size
            if on_step is not None:
                on_step(step)
            if step % cfg["log_every"] == 0 or step == total:
                now = time.perf_counter()
                row = {"step": step, "epoch": step / spe, "loss": float(loss.detach()),
                       "lr": sched.get_last_lr()[0], "examples_per_s": seen / max(now - t0, 1e-9),
                       **{k: _scalar(v) for k, v in stats.items()}}
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                if "nll_nats" in row and getattr(objective, "prep", None) is not None \
                        and getattr(objective.prep, "n_bits", None):
                    from flowspec.metrics import bits_per_dim

                    row["bits_per_dim"] = float(bits_per_dim(row["nll_nats"], flow.num_dims,
                                                             objective.prep.n_bits))
                reporter.log(step, row)
                metrics_file.write(json.dumps({"split": "train", **row}) + "\n")
                metrics_file.flush()
                t0, seen = now, 0
            epoch_end = step % spe == 0 or step == total
            if epoch_end:
                epoch = math.ceil(step / spe)
                is_best = False
                if cfg["eval_every"] and (epoch % cfg["eval_every"] == 0 or step == total):
                    last_metrics = {"step": step, "epoch": epoch, **evaluate()}
                    value = last_metrics.get(objective.key_metric, math.inf)
                    is_best = value < best
                    best = min(best, value)
                    reporter.epoch(epoch, last_metrics)
                    metrics_file.write(json.dumps({"split": "test", **last_metrics}) + "\n")
                    metrics_file.flush()
                checkpoint(step, last_metrics, is_best or not (run_dir / "best.safetensors")
                           .exists())
                if cfg["sample_every"] and (epoch % cfg["sample_every"] == 0 or step == total):
                    draw(epoch)
            elif cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0:
                checkpoint(step, last_metrics, False)
    except KeyboardInterrupt:
        reporter.message(f"interrupted at step {step}; resume with --resume {run_dir}")
        raise
    finally:
        stop.restore()
        metrics_file.close()
        reporter.close()
    return TrainResult(run_dir=run_dir, step=step, metrics=last_metrics)
