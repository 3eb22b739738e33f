"""Glow speed: flowspec's compiled Glow vs the same model by hand, normflows and FrEIA.

Every model has the same architecture (L levels of squeeze, K steps of actnorm
-> LU 1x1 conv -> affine coupling with Glow's sigmoid scale and a glow_cnn
conditioner, a learned conditional split prior between levels, a learned
diagonal Gaussian top prior), see ``glow_reference.py`` (by hand) and
``glow_peers.py`` (normflows, FrEIA, each in its idiom, and what had to be
added to them). Timed: a train step (``-log p(x)`` mean, backward, Adam step)
and sampling at T = 0.7, each eagerly and with the log-prob / the sampling
function wrapped in ``torch.compile``. Rounds are interleaved in one process
(the order rotates every round) and reported as medians: of process CPU time
on single-threaded CPU runs (robust to other jobs on a shared machine; ``--clock
wall`` for wall time), of wall time otherwise. Ratios are flowspec over each
model and over the faster peer (< 1: flowspec is faster). ``--channels-last
flowspec|all`` adds ``NAME-cl`` copies with channels_last conv weights (what
``train.channels_last`` does). ``--memory`` reports the peak memory of one
train step of ``specs/glow_celeba.yaml`` with and without
``train.checkpoint_grads``, each in a fresh process.

The peers live only in the benchmark's own environment, never in flowspec's::

    python -m venv .venv-bench && . .venv-bench/bin/activate
    pip install torch==2.13.0          # CPU wheel; the CUDA build on a GPU machine
    pip install -e . -r benchmarks/requirements-glow.txt
    OMP_NUM_THREADS=1 python benchmarks/glow_speed.py            # L=3, K=8, width 256, 3x32x32
    python benchmarks/glow_speed.py --quick --no-compile         # a tiny smoke run
    python benchmarks/glow_speed.py --no-compile --channels-last all
    python benchmarks/glow_speed.py --memory                     # glow_celeba peak memory

A missing peer is reported and skipped; the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from glow_peers import Peer, freia_glow, normflows_glow  # noqa: E402
from glow_reference import RefGlow  # noqa: E402
from timing import train_step  # noqa: E402

from flowspec.bijectors.conv1x1 import InvConv1x1  # noqa: E402
from flowspec.compile import Flow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = """\
name: glow_speed
vars: {K: 8, L: 3, width: 256, C: 3, H: 32, W: 32}
blocks:
  glow_step:
    params: {width: 512}
    flow:
      - actnorm
      - inv_conv1x1: {lu: true}
      - affine_coupling: {mask: channel, scale: sigmoid, net: {glow_cnn: {width: "${width}"}}}
model:
  input: ["${C}", "${H}", "${W}"]
  prior: diag_gaussian
  flow:
    - repeat: "${L - 1}"
      body:
        - squeeze
        - repeat: "${K}"
          body: [{block: glow_step, args: {width: "${width}"}}]
        - factor_out: {prior: conditional_gaussian}
    - squeeze
    - repeat: "${K}"
      body: [{block: glow_step, args: {width: "${width}"}}]
"""
PEERS = ("normflows", "FrEIA")
TEMPERATURE = 0.7


def flowspec_glow(shape: tuple[int, int, int], L: int, K: int, width: int) -> Flow:
    """Compile the Glow above from its spec, sizes set as variable overrides."""
    from flowspec.api import build_flow
    from flowspec.spec import load_spec

    c, h, w = shape
    overrides = {"vars.K": K, "vars.L": L, "vars.width": width,
                 "vars.C": c, "vars.H": h, "vars.W": w}
    return build_flow(load_spec(SPEC, overrides))


def _flowspec_peer(shape, L, K, width) -> Peer:
    flow = flowspec_glow(shape, L, K, width)
    return Peer(flow, flow.log_prob, lambda n, t: flow.sample(n, temperature=t))


def _hand_peer(shape, L, K, width) -> Peer:
    ref = RefGlow(shape, L, K, width)
    return Peer(ref, ref.log_prob, ref.sample)


BUILDERS: dict[str, Callable[..., Peer]] = {
    "flowspec": _flowspec_peer, "hand": _hand_peer,
    "normflows": normflows_glow, "FrEIA": freia_glow,
}


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: the clock timings are taken with: "cpu" (this process's CPU time, robust to other
#: jobs on a shared machine; meaningful for single-threaded CPU runs) or "wall".
CLOCK = {"name": "wall", "fn": time.perf_counter}


def _set_clock(name: str) -> None:
    CLOCK.update(name=name, fn=time.process_time if name == "cpu" else time.perf_counter)


def _interleaved(fns: dict[str, Callable[[], object]], device: torch.device, n: int,
                 warmup: int) -> dict[str, float]:
    """Median seconds per call; one call of each per round, the order rotating."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    clock = CLOCK["fn"]
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(n):
        for k in names[r % len(names):] + names[:r % len(names)]:
            _sync(device)
            t0 = clock()
            fns[k]()
            _sync(device)
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _sampler(fn: Callable[[int, float], torch.Tensor], n: int) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn(n, TEMPERATURE)
    return run


def _compile(name: str, fn: Callable, what: str) -> Callable | None:
    try:
        return torch.compile(fn)
    except Exception as err:  # noqa: BLE001 -- report and carry on eagerly
        print(f"  torch.compile of {name} {what} failed: {type(err).__name__}: {err}")
        return None


def _first_call(name: str, fn: Callable[[], object], what: str) -> bool:
    """Run ``fn`` once (compilation happens here); False, with a message, if it fails."""
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        msg = str(err).strip().splitlines()
        print(f"  torch.compile'd {name} {what} failed: {type(err).__name__}: "
              f"{msg[0] if msg else ''}")
        return False
    print(f"  compiled {name} {what} in {time.perf_counter() - t0:.1f} s")
    return True


def _set_cache(flow: Flow, on: bool) -> None:
    for m in flow.modules():
        if isinstance(m, InvConv1x1):
            m.cache_inverse = on


def _ratios(med: dict[str, float]) -> tuple[list[str], dict[str, float]]:
    """flowspec's ratios: like for like (a ``-cl`` variant against ``-cl`` models), and a
    channels_last flowspec also against the models as written (default layout)."""
    lines: list[str] = []
    extra: dict[str, float] = {}
    for f in [k for k in med if k.split("-")[0] == "flowspec"]:
        sfx = f[len("flowspec"):]
        for against in dict.fromkeys([sfx, ""]):
            others = [k + against for k in ("hand", *PEERS) if k + against in med]
            if not others:
                continue
            parts = []
            for k in others:
                extra[f"{f}_over_{k}"] = med[f] / med[k]
                parts.append(f"{f}/{k} {med[f] / med[k]:.2f}")
            peers = [k + against for k in PEERS if k + against in med]
            if peers:
                fastest = min(peers, key=lambda k: med[k])
                key = f"{f}_over_faster_peer{against}"
                extra[key] = med[f] / med[fastest]
                parts.append(f"{f}/faster peer ({fastest}) {extra[key]:.2f}")
            lines.append("  ".join(parts))
    # short names for the plain comparison
    for k in list(extra):
        if k.startswith("flowspec_over_"):
            extra[k[len("flowspec_"):]] = extra[k]
    return lines, extra


def _report(label: str, med: dict[str, float]) -> dict[str, float]:
    cells = "  ".join(f"{k} {med[k] * 1e3:.1f}" for k in med)
    print(f"{label} (ms): {cells}")
    lines, extra = _ratios(med)
    for line in lines:
        print(f"    {line}")
    return extra


def time_all(models: dict[str, Peer], x: torch.Tensor, device: torch.device, n: int,
             warm: int, compiled: bool) -> dict[str, float]:
    """Train-step and sampling medians (seconds) of every model, and flowspec's ratios."""
    mode = "compiled" if compiled else "eager"
    results: dict[str, float] = {}
    steps, samplers = {}, {}
    for name, m in models.items():
        m.module.train()
        lp = m.log_prob
        if compiled:
            lp = _compile(name, m.log_prob, "log_prob")
            if lp is None:
                continue
        step = train_step(lp, torch.optim.Adam(m.params, lr=1e-4), x)
        if compiled and not _first_call(name, step, "train step"):
            continue
        steps[name] = step
    if "flowspec" in steps:
        med = _interleaved(steps, device, n, warm)
        extra = _report(f"train step, {mode}", med)
        results.update({f"train_{mode}_{k}_s": v for k, v in med.items()})
        results.update({f"train_{mode}_{k}": v for k, v in extra.items()})
    for name, m in models.items():
        m.module.eval()
        fn = m.sample
        if compiled:
            fn = _compile(name, m.sample, "sample")
            if fn is None:
                continue
        run = _sampler(fn, x.shape[0])
        if compiled and not _first_call(name, run, "sample"):
            continue
        samplers[name] = run
    if "flowspec" in samplers:
        med = _interleaved(samplers, device, n, warm)
        extra = _report(f"sampling, {mode}", med)
        results.update({f"sample_{mode}_{k}_s": v for k, v in med.items()})
        results.update({f"sample_{mode}_{k}": v for k, v in extra.items()})
    return results


# ---------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(spec: str, batch: int, checkpoint_grads: bool, device: str,
                 overrides: list[str]) -> dict[str, float]:
    """One train step of ``spec`` in this (fresh) process; its peak memory in bytes.

    CPU: peak RSS of the process (``ru_maxrss``, a lifetime high-water mark) and the
    RSS just before the step (model built, actnorm initialised); the difference is
    what the step needs (activations, gradients, Adam state). CUDA: allocator peak.
    """
    from flowspec.api import build_flow
    from flowspec.spec import load_spec

    torch.manual_seed(0)
    dev = torch.device(device)
    flow = build_flow(load_spec(Path(spec), overrides)).to(dev).train()
    flow.checkpoint_grads = checkpoint_grads
    x = torch.rand(batch, *flow.input_shape, device=dev) - 0.5
    with torch.no_grad():  # data-dependent actnorm init, as the first training batch does
        flow.log_prob(x[:2])
    step = train_step(flow.log_prob, torch.optim.Adam(flow.parameters(), lr=1e-4), x)
    _sync(dev)
    base_rss = _rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    step()
    _sync(dev)
    out = {"seconds": time.perf_counter() - t0,
           "params": sum(p.numel() for p in flow.parameters()),
           "base_rss": base_rss,
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if dev.type == "cuda":
        out["base_alloc"] = base
        out["peak_alloc"] = torch.cuda.max_memory_allocated(dev)
    return out


def memory_report(spec: str, batch: int, device: str, overrides: list[str],
                  threads: int) -> dict[str, float]:
    """Run :func:`memory_child` with and without checkpoint_grads, each in a fresh process."""
    print(f"peak memory of one train step: {spec} at batch {batch} on {device} "
          f"({'overrides ' + ' '.join(overrides) if overrides else 'as shipped'}), "
          "each setting in a fresh process")
    results = {}
    for ckpt in (False, True):
        cmd = [sys.executable, __file__, "--memory-child", spec, "--batch", str(batch),
               "--device", device, "--threads", str(threads)]
        cmd += ["--checkpoint-grads"] if ckpt else []
        for o in overrides:
            cmd += ["--override", o]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            raise SystemExit(f"memory run failed (checkpoint_grads={ckpt})")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        tag = "on " if ckpt else "off"
        mib = 2.0 ** 20
        if "peak_alloc" in r:
            line = (f"peak allocated {r['peak_alloc'] / mib:8.0f} MiB (step's own "
                    f"{(r['peak_alloc'] - r['base_alloc']) / mib:8.0f} MiB)")
        else:
            line = (f"peak RSS {r['peak_rss'] / mib:8.0f} MiB (above the "
                    f"{r['base_rss'] / mib:.0f} MiB before the step: "
                    f"{(r['peak_rss'] - r['base_rss']) / mib:8.0f} MiB)")
        print(f"  checkpoint_grads {tag}: {line}, step {r['seconds']:.1f} s, "
              f"{r['params']:,} parameters")
        results.update({f"memory_ckpt_{tag.strip()}_{k}": v for k, v in r.items()})
    return results


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--no-compile", action="store_true", help="time eager mode only")
    ap.add_argument("--no-eager", action="store_true", help="time torch.compile'd mode only")
    ap.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                    help="cpu: process CPU time (robust on a shared machine); auto: cpu for "
                    "single-threaded CPU runs, wall otherwise")
    ap.add_argument("--peers", default="hand,normflows,FrEIA",
                    help="comma-separated models to compare flowspec with")
    ap.add_argument("--channels-last", choices=("none", "flowspec", "all"), default="none",
                    help="also time channels_last copies (NAME-cl: conv weights in that "
                    "layout) of flowspec, or of every model")
    ap.add_argument("--memory", action="store_true",
                    help="peak memory of glow_celeba with/without checkpoint_grads")
    ap.add_argument("--memory-spec", default=str(ROOT / "specs" / "glow_celeba.yaml"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--override", action="append", default=[],
                    help="spec override for --memory, e.g. vars.K=8 (repeatable)")
    ap.add_argument("--memory-child", metavar="SPEC", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint-grads", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.memory_child:
        r = memory_child(args.memory_child, args.batch, args.checkpoint_grads, args.device,
                         args.override)
        print(json.dumps(r))
        return r
    if args.memory:
        return memory_report(args.memory_spec, args.batch, args.device, args.override,
                             args.threads)

    device = torch.device(args.device)
    clock = args.clock
    if clock == "auto":
        clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    _set_clock(clock)
    if args.quick:
        shape, L, K, width, batch, n, warm = (3, 8, 8), 2, 2, 16, 4, 3, 1
    else:
        shape, L, K, width, batch, n, warm = (3, 32, 32), 3, 8, 256, args.batch, 20, 3
    n = args.repeats or n
    print(f"Glow L={L} K={K} width={width} input={list(shape)} batch={batch} on {device}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), "
          f"{'process CPU' if clock == 'cpu' else 'wall-clock'} time, medians of {n} "
          "interleaved rounds")

    models: dict[str, Peer] = {}
    for name in ["flowspec", *[p for p in args.peers.split(",") if p]]:
        if name not in BUILDERS:
            raise SystemExit(f"unknown model '{name}' (known: {', '.join(BUILDERS)})")
        torch.manual_seed(0)
        try:
            models[name] = BUILDERS[name](shape, L, K, width)
        except ImportError as err:
            print(f"  skipping {name}: {err}")
            continue
        models[name].module.to(device)
    if args.channels_last != "none":
        for name in [k for k in models if args.channels_last == "all" or k == "flowspec"]:
            torch.manual_seed(0)
            cl = BUILDERS[name](shape, L, K, width)
            cl.module.to(device, memory_format=torch.channels_last)
            models[f"{name}-cl"] = cl
    print("parameters: " + "  ".join(f"{k} {sum(p.numel() for p in m.params):,}"
                                     for k, m in models.items()))

    x = torch.rand(batch, *shape, device=device) - 0.5
    for m in models.values():  # data-dependent actnorm init, the same batch for all
        m.module.train()
        with torch.no_grad():
            m.log_prob(x)

    results = {} if args.no_eager else time_all(models, x, device, n, warm, compiled=False)
    if "flowspec" in models and not args.no_eager:
        flow = models["flowspec"].module
        sample_flow = _sampler(models["flowspec"].sample, batch)

        def sample_uncached():
            _set_cache(flow, False)
            try:
                sample_flow()
            finally:
                _set_cache(flow, True)

        cache = _interleaved({"cached": sample_flow, "uncached": sample_uncached},
                             device, n, warm)
        results["uncached_over_cached"] = cache["uncached"] / cache["cached"]
        print(f"flowspec sampling, 1x1 inverse weights cached {cache['cached'] * 1e3:.1f} ms, "
              f"re-derived {cache['uncached'] * 1e3:.1f} ms "
              f"(ratio {results['uncached_over_cached']:.2f})")
    if not args.no_compile:
        results.update(time_all(models, x, device, n, warm, compiled=True))
    return results


if __name__ == "__main__":
    main()
