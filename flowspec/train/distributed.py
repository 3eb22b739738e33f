"""Data-parallel training: N processes, one model replica each, one global batch.

The trainer stays one program; this module is everything it needs to run as N copies:

* **Joining** (:func:`setup`): ``flowspec train`` reads the variables ``torchrun`` sets
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins
  the process group -- NCCL with one GPU per rank (``cuda:LOCAL_RANK``), gloo on CPU.
  ``flowspec train --nproc N`` (:func:`launch`) spawns N local workers with exactly
  those variables set, so both ways run the same code.
* **Data**: the global batch is ``train.batch_size``; every rank draws the same seeded
  permutation and takes its slice of each global batch (:func:`local_batch`), so N
  processes see exactly the examples one process would. DistributedDataParallel
  averages the gradients, giving the gradient of the global batch mean.
* **Agreement**: a non-finite loss on any rank makes every rank skip that step
  (:func:`any_true`); a Ctrl-C on any rank stops every rank at the same step (checked
  every :data:`STOP_CHECK_EVERY` steps), after rank 0's checkpoint; the run directory
  is chosen by rank 0 and broadcast; evaluation is sharded and summed.
* **Writing**: checkpoints, metrics, run files and pictures come from rank 0 only.

What is exact: on continuous data the weights after N-process steps equal the
1-process run's to float rounding (summation order). What is not bitwise: random
numbers drawn inside a step (dequantization noise, reverse-KL samples) come from a
per-rank stream, so they are statistically, not bitwise, equivalent.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from flowspec.errors import FlowspecError
from flowspec.objectives.base import local_batch

#: the variables torchrun sets for every worker.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Group:
    """Where this process stands: its rank among ``world`` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: this process joined the group itself, so it leaves it at the end
    owns: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Group()


def launched_world() -> int:
    """``WORLD_SIZE`` as set by torchrun (or ``--nproc``); 1 when started plainly."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _rank_device(device: str, local_rank: int) -> torch.device:
    """One device per rank: ``cuda:LOCAL_RANK`` on GPUs, the CPU otherwise."""
    if device.startswith("cuda:"):
        raise FlowspecError(f"--device {device}: with several processes each rank uses the "
                            "GPU of its local rank", hint="use --device cuda (or auto)")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FlowspecError("--device cuda was asked for, but no CUDA device is available",
                            hint="use --device cpu or auto")
    if local_rank >= torch.cuda.device_count():
        raise FlowspecError(
            f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible on "
            "this node", hint="start at most one process per GPU (--nproc / --nproc-per-node)")
    return torch.device("cuda", local_rank)


def setup(device: str) -> tuple[Group, torch.device | None]:
    """Join the process group the environment describes; this rank's device.

    Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing happens and the
    device is None (the caller resolves it as for any single-process run).
    """
    world = launched_world()
    if world <= 1:
        return SINGLE, None
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise FlowspecError(f"WORLD_SIZE={world} is set but {', '.join(missing)} is not",
                            hint="start several processes with `flowspec train --nproc N` "
                            "or torchrun, which set all of RANK, WORLD_SIZE, LOCAL_RANK, "
                            "MASTER_ADDR and MASTER_PORT")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    dev = _rank_device(device, local_rank)
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=30))
        owns = True
    elif dist.get_world_size() != world:
        raise FlowspecError(f"a process group of {dist.get_world_size()} is already "
                            f"initialised, but WORLD_SIZE is {world}")
    return Group(rank, world, local_rank, owns), dev


def teardown(group: Group) -> None:
    if group.owns and dist.is_initialized():
        dist.destroy_process_group()


def check_launch(nproc: int, device: str, batch_size: int | None) -> None:
    """Refuse a launch before spawning anything: uneven batch, too few GPUs, a fixed GPU."""
    if batch_size is not None:
        local_batch(batch_size, nproc)
    _rank_device(device, nproc - 1)


def shard(group: Group) -> tuple[int, int]:
    """``(rank, world)`` for the objective: which slice of each global batch is this rank's."""
    return group.rank, group.world


# -- collectives (all are no-ops in a single process) --------------------------------------
def broadcast_object(group: Group, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (small picklable values: a path, a metrics dict)."""
    if not group.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_true(group: Group, flag: bool | torch.Tensor, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (one tiny all-reduce)."""
    if not group.enabled:
        return bool(flag)
    t = torch.as_tensor(flag, dtype=torch.float32, device=device).reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


#: ranks agree on a pending Ctrl-C every this many steps (one collective per check)
STOP_CHECK_EVERY = 10


def stop_agreed(group: Group, requested: bool, step: int, device: torch.device) -> bool:
    """Whether all ranks stop before ``step``: at once in one process; with several, at
    the next multiple of :data:`STOP_CHECK_EVERY` after any rank saw a Ctrl-C."""
    if not group.enabled:
        return requested
    return step % STOP_CHECK_EVERY == 0 and any_true(group, requested, device)


def reduce_log(group: Group, loss: torch.Tensor, stats: dict[str, Any], rate: float,
               device: torch.device) -> tuple[torch.Tensor, dict[str, Any], float]:
    """Rank means of the loss and statistics and the sum of examples/s, on every rank."""
    if not group.enabled:
        return loss, stats, rate
    keys = sorted(stats)
    vals = [loss.detach().double().reshape(())]
    vals += [torch.as_tensor(stats[k], dtype=torch.float64, device=device).detach().reshape(())
             for k in keys]
    packed = torch.stack([v.to(device) for v in vals]
                         + [torch.tensor(rate, dtype=torch.float64, device=device)])
    dist.all_reduce(packed)
    means = packed[:-1] / group.world
    return means[0], {k: means[i + 1] for i, k in enumerate(keys)}, float(packed[-1])


@torch.no_grad()
def sync_buffers(group: Group, module: nn.Module) -> None:
    """Rank 0's buffers (e.g. batch-norm running averages) on every rank, before evaluating."""
    if not group.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


# -- the model the loss calls ---------------------------------------------------------------
class Entry(nn.Module):
    """A module whose ``forward`` is a :class:`~flowspec.compile.Flow` method by name.

    DistributedDataParallel (and torch.compile) hook a module's ``forward``; the
    objectives call ``log_prob`` or ``sample_and_log_prob``, so this routes those
    calls through ``forward``.
    """

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.flow, method)(*args, **kwargs)


class TrainView:
    """What the objectives see during training: the flow, with the methods a loss calls
    going through the wrapped (DDP and/or compiled) entry. Everything else -- shapes,
    ``num_dims``, context handling -- is the flow's own.

    ``log_prob`` and ``sample_and_log_prob`` are routed; any other method of the flow
    that a loss differentiates through is called as ``flow.call("method", *args)``, so
    DDP synchronises its gradients (calling it on the view directly would bypass DDP).
    """

    def __init__(self, flow: nn.Module, entry: Callable[..., Any]):
        self._flow = flow
        self._entry = entry

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``flow.method(*args, **kwargs)`` through the training entry."""
        return self._entry(method, *args, **kwargs)

    def log_prob(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        return self._entry("log_prob", x, context)

    def sample_and_log_prob(self, n: int, *, context: Any = None, temperature: float = 1.0):
        return self._entry("sample_and_log_prob", n, context=context, temperature=temperature)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._flow, name)


def wrap(flow: nn.Module, group: Group, device: torch.device) -> nn.Module:
    """The flow's :class:`Entry`, inside DistributedDataParallel when several ranks run."""
    entry = Entry(flow)
    if not group.enabled:
        return entry
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Every parameter of a flow is on the path to log p (true of all shipped specs), so DDP
    # needs no per-step search for unused parameters (find_unused_parameters stays off).
    return DistributedDataParallel(entry, device_ids=ids, output_device=ids[0] if ids else None)


# -- launching N local workers ----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(index: int, nproc: int, port: int, results: Any, fn: Callable, args: tuple) -> None:
    """One spawned worker: torchrun's variables, then ``fn(*args)``; the outcome to the parent."""
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if "OMP_NUM_THREADS" not in os.environ:  # N processes share the cores, as torchrun does
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    outcome: tuple | None = None
    try:
        out = fn(*args)
    except FlowspecError as err:
        outcome = ("error", index, err)
    except KeyboardInterrupt:
        outcome = ("interrupted", index, None)
    else:
        outcome = ("done", index, out) if index == 0 else None
    if outcome is not None:
        results.put(outcome)
    # The outcome is delivered and every file is closed: skip the interpreter's teardown,
    # which for a process holding torch takes seconds and only delays the parent's join.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(nproc: int, fn: Callable, *args: Any) -> Any:
    """Run ``fn(*args)`` in ``nproc`` spawned local workers that form one process group.

    Returns rank 0's return value (keep it small and picklable). A user error on any
    rank is re-raised here (workers still running 10 s after it are stopped, so a rank
    waiting on a collective never hangs the launch); a Ctrl-C is left to the workers
    (they agree on a step, checkpoint and stop), then raised here as KeyboardInterrupt.
    """
    import time

    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    ctx = mp.start_processes(_worker, args=(nproc, _free_port(), results, fn, args),
                             nprocs=nproc, join=False, start_method="spawn")
    outcomes: list[tuple] = []
    failure: BaseException | None = None
    presses, error_seen = 0, None
    while True:
        try:
            if ctx.join(timeout=1.0):
                break
        except KeyboardInterrupt:
            presses += 1  # the workers got the same signal and stop on their own
            if presses >= 3:
                _terminate(ctx)
                raise
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:  # crashed
            failure = err
            break
        while not results.empty():
            outcomes.append(results.get())
        if error_seen is None and any(kind == "error" for kind, _, _ in outcomes):
            error_seen = time.monotonic()
        if error_seen is not None and time.monotonic() - error_seen > 10:
            _terminate(ctx)
            break
    while not results.empty():
        outcomes.append(results.get())
    for kind, _, value in outcomes:
        if kind == "error":
            raise value
    if any(kind == "interrupted" for kind, _, _ in outcomes) or presses:
        raise KeyboardInterrupt
    if failure is not None:
        raise failure
    done = [value for kind, _, value in outcomes if kind == "done"]
    if not done:
        raise RuntimeError("the distributed workers ended without a result")
    return done[0]


def _terminate(ctx: Any) -> None:
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(5)
