"""Scaling knobs on this machine: eager vs torch.compile vs bf16 step time, and 1 vs N processes.

Step times (``steps`` mode) come from interleaved blocks in one process: the same
flow architecture, same batch, same optimizer, built once per variant, timed in
alternating blocks so machine noise hits every variant alike; medians of the
per-block step times are printed with the ratio to eager fp32, plus the one-off
compile time. Process scaling (``procs`` mode) trains a spec with 1 and N processes
(alternating runs) and reads the examples/s the runs logged (summed over ranks),
ignoring the first logged interval (start-up).

    python benchmarks/scaling.py steps [--models moons,glow] [--rounds 5] [--block 20]
    python benchmarks/scaling.py procs [--spec specs/realnvp_moons.yaml] [--nproc 2] [--set k=v]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import flowspec
from flowspec.train.distributed import Entry
from flowspec.train.precision import Precision
from flowspec.train.torch_compile import CompiledOrEager

ROOT = Path(__file__).parent.parent

#: name -> (spec, overrides, batch of model inputs)
MODELS = {
    "moons": ("specs/realnvp_moons.yaml", {}, lambda: torch.randn(256, 2)),
    "glow": ("specs/glow_mnist.yaml", {"vars.K": 4, "vars.L": 2, "vars.width": 32},
             lambda: torch.rand(16, 1, 32, 32)),
}


def _variant(name: str, model: str, compile_: bool, precision: str):
    path, overrides, batch = MODELS[model]
    torch.manual_seed(0)
    flow = flowspec.load(ROOT / path, overrides).train()
    x = batch()
    flow.log_prob(x)  # data-dependent init (actnorm) outside the timing
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    entry = Entry(flow)
    call = CompiledOrEager(entry, print) if compile_ else entry
    prec = Precision(precision, torch.device("cpu"))

    def step() -> float:
        with prec.autocast():
            loss = -call("log_prob", x).mean()
        opt.zero_grad(set_to_none=True)
        prec.backward(loss)
        prec.step(opt, flow.parameters(), None)
        return float(loss.detach())

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    return {"name": name, "step": step, "first": first, "times": []}


def bench_steps(models: list[str], rounds: int, block: int) -> None:
    for model in models:
        variants = [_variant("eager fp32", model, False, "fp32"),
                    _variant("compiled fp32", model, True, "fp32"),
                    _variant("eager bf16", model, False, "bf16")]
        for _ in range(rounds):
            for v in variants:
                t0 = time.perf_counter()
                for _ in range(block):
                    v["step"]()
                v["times"].append((time.perf_counter() - t0) / block)
        base = statistics.median(variants[0]["times"])
        print(f"\n{model} ({MODELS[model][0]} {MODELS[model][1]}), "
              f"{rounds} interleaved blocks of {block} steps")
        print(f"{'variant':<14} {'ms/step':>8} {'vs eager':>9} {'first step (compile) s':>23}")
        for v in variants:
            med = statistics.median(v["times"])
            print(f"{v['name']:<14} {1e3 * med:8.2f} {base / med:8.2f}x {v['first']:23.1f}")


def _run_rate(spec: str, sets: list[str], nproc: int, steps: int, log_every: int) -> float:
    from flowspec.spec import load_spec
    from flowspec.train import train
    from flowspec.train.report import SilentReporter

    with tempfile.TemporaryDirectory() as out:
        s = load_spec(ROOT / spec, [*sets, f"train.steps={steps}", f"train.log_every={log_every}",
                                    "train.eval_every=0", "train.sample_every=0"])
        result = train(s, out=out, device="cpu", nproc=nproc, reporter=SilentReporter())
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    rates = [r["examples_per_s"] for r in rows if r["split"] == "train"][1:]
    return statistics.median(rates)


def bench_procs(spec: str, sets: list[str], nproc: int, rounds: int, steps: int,
                log_every: int) -> None:
    rates: dict[int, list[float]] = {1: [], nproc: []}
    for _ in range(rounds):
        for n in (1, nproc):
            rates[n].append(_run_rate(spec, sets, n, steps, log_every))
    one = statistics.median(rates[1])
    print(f"\n{spec} {' '.join(sets)}: examples/s "
          f"(median of {rounds} alternating runs, {steps} steps each)")
    for n, r in rates.items():
        med = statistics.median(r)
        print(f"{n} process(es): {med:9.0f} examples/s  ({med / one:.2f}x)  runs: "
              + ", ".join(f"{v:.0f}" for v in r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    st = sub.add_parser("steps")
    st.add_argument("--models", default="moons,glow")
    st.add_argument("--rounds", type=int, default=5)
    st.add_argument("--block", type=int, default=20)
    pr = sub.add_parser("procs")
    pr.add_argument("--spec", default="specs/realnvp_moons.yaml")
    pr.add_argument("--set", action="append", default=[], dest="sets",
                    help="spec override (repeatable), e.g. --set vars.K=4")
    pr.add_argument("--nproc", type=int, default=2)
    pr.add_argument("--rounds", type=int, default=3)
    pr.add_argument("--steps", type=int, default=400)
    pr.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args()
    if args.mode == "steps":
        torch.set_num_threads(1)
        bench_steps(args.models.split(","), args.rounds, args.block)
    else:
        bench_procs(args.spec, args.sets, args.nproc, args.rounds, args.steps, args.log_every)


if __name__ == "__main__":
    main()
