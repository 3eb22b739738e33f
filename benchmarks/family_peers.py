"""The numerically inverted flow families against zuko 1.6, same architecture and budget,
one process, interleaved (issue #17): NAF, UNAF, SOS polynomial and Bernstein
polynomial autoregressive flows on the 2-D toys.

Per case both libraries train side by side: every step both get the same minibatch and
the same optimizer (Adam, same lr, no schedule); which library steps first alternates,
so load from other jobs hits both alike. Reported: test NLL (nats, 10 000 points) minus
the generator's entropy, and the median train-step time of each (forward + backward +
Adam step; the density direction, which is one pass in both).

Matched: T autoregressive transforms, each a MADE with the same hidden widths (ReLU),
the order reversed every transform, a standard normal base, the transformer's own
sizes (stated per row). What differs, by each library's design:

* NAF: flowspec's ``dsf`` is the paper's deep sigmoidal flow (a softmax mixture of U
  sigmoids, its 3U numbers predicted per entry); zuko's NAF is a positive-weight
  monotonic MLP (64x64) shared by the entries of a dimension, fed a 16-number signal,
  its log-det by autograd. Same MADE, different transformer: the NAF paper's, and zuko's;
* UNAF: both integrate a free integrand net of (x, signal) by Gauss-Legendre (32 nodes,
  same widths); flowspec's net is shared by both dimensions (zuko: one per dimension)
  and uses SiLU with a softplus floor (zuko: ELU and a soft-clipped exp);
* SOSPF: both are ``∫ 1e-3 + mean_k (1 + p_k(x / B))²`` (k = 3 polynomials of degree
  4, zuko's defaults); flowspec integrates in closed form and is linear outside
  ``[-B, B]`` with B = 5, zuko integrates by 32-point Gauss-Legendre with B = 10 and a
  soft clip to ±11 between transforms;
* BPF: on [-5, 5] in both; zuko's ``BPF(degree=16)`` is a degree-21 polynomial (17 free
  coefficient increments by softmax, 2 fixed at each end so that it joins the identity
  outside with slope 1); flowspec's ``degree: 16`` is degree 16 (16 free increments,
  learned end slopes), so the table also has flowspec at degree 21 (row BPF, 21);
* every flowspec conditioner starts at zero (each layer the identity, or for dsf and
  sos a fixed near-identity map); zuko's use PyTorch's default init; zuko inserts
  ``Softclip(11)`` between NAF / UNAF / SOSPF transforms, flowspec nothing.

zuko is not a flowspec dependency; the benchmark has its own venv:

    /work/venv/bin/python -m venv --system-site-packages .venv-bench   # or any python
    .venv-bench/bin/pip install --no-deps zuko==1.6.0 && .venv-bench/bin/pip install --no-deps -e .
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/family_peers.py --quick
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/family_peers.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import tabular  # noqa: E402  (its Data: toys loaded once, NLL on the test split)

import flowspec  # noqa: E402

try:
    import zuko
except ImportError:  # pragma: no cover - depends on the environment
    zuko = None


@dataclass
class Case:
    family: str  # naf | unaf | sospf | bpf
    data: str
    transforms: int
    hidden: tuple[int, ...]
    transformer: dict[str, Any]
    zuko_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch: int = 512
    lr: float = 1e-3

    def label(self) -> str:
        (name, params), = self.transformer.items()
        inner = ", ".join(f"{k} {v}" for k, v in params.items())
        return f"{self.transforms} × {list(self.hidden)}, {name} ({inner})"


ZUKO_CLASS = {"naf": "NAF", "unaf": "UNAF", "sospf": "SOSPF", "bpf": "BPF", "bpf21": "BPF"}


def flowspec_flow(case: Case) -> torch.nn.Module:
    node = {"autoregressive": {"hidden": list(case.hidden), "parity": "${i}",
                               "transformer": case.transformer}}
    spec = {"model": {"input": [2], "flow": [{"repeat": case.transforms, "as": "i",
                                              "body": [node]}]}}
    return flowspec.load(spec).train()


def zuko_flow(case: Case) -> torch.nn.Module:
    cls = getattr(zuko.flows, ZUKO_CLASS[case.family])
    return cls(2, transforms=case.transforms, hidden_features=case.hidden,
               **case.zuko_kwargs).train()


def run_case(case: Case, data: tabular.Data, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    fs = flowspec_flow(case)
    torch.manual_seed(seed)
    zk = zuko_flow(case)
    sides = {"flowspec": (fs, fs.log_prob), "zuko": (zk, lambda x: zk().log_prob(x))}
    opts = {k: torch.optim.Adam(m.parameters(), lr=case.lr) for k, (m, _) in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, float] = {k: 0.0 for k in sides}
    gen = torch.Generator().manual_seed(seed + 1)
    n = data.train.shape[0]
    for step in range(case.steps):
        x = data.train[torch.randint(0, n, (case.batch,), generator=gen)]
        for key in (["flowspec", "zuko"] if step % 2 == 0 else ["zuko", "flowspec"]):
            _, log_prob = sides[key]
            t0, c0 = time.perf_counter(), time.process_time()
            loss = -log_prob(x).mean()
            opts[key].zero_grad(set_to_none=True)
            loss.backward()
            opts[key].step()
            times[key].append(time.perf_counter() - t0)
            cpu[key] += time.process_time() - c0
            if not math.isfinite(float(loss.detach())):
                raise RuntimeError(f"{key} diverged at step {step} on {case.data}/{case.family}")
    warm = max(1, case.steps // 10)
    out: dict[str, Any] = {"case": case, "seed": seed}
    for key, (model, log_prob) in sides.items():
        model.eval()
        out[key] = data.nll(log_prob)
        out[key]["step_ms"] = 1e3 * statistics.median(times[key][warm:])
        out[key]["cpu_s"] = cpu[key]
    return out


def cases(args) -> list[Case]:
    q = args.quick
    t, steps = (2 if q else 4), (args.steps or (50 if q else 1000))
    small, mid = ((16, 16) if q else (64, 64)), ((16, 16) if q else (128, 128))
    every = [
        Case("naf", "8gaussians", t, small, {"dsf": {"units": 16}},
             {"signal": 16, "network": {"hidden_features": (64, 64)}}, steps),
        Case("unaf", "moons", t, small,
             {"umnn": {"hidden": [64, 64], "embedding": 16, "nodes": 32}},
             {"signal": 16, "network": {"hidden_features": (64, 64)}}, steps),
        Case("sospf", "2spirals", t, mid, {"sos": {"polynomials": 3, "degree": 4}},
             {"polynomials": 3, "degree": 4}, steps),
        Case("bpf", "checkerboard", t, mid, {"bernstein": {"degree": 16, "bound": 5.0}},
             {"degree": 16}, steps),
        # zuko's BPF(degree=16) is a degree-21 polynomial (17 free increments, 4 fixed)
        Case("bpf21", "checkerboard", t, mid, {"bernstein": {"degree": 21, "bound": 5.0}},
             {"degree": 16}, steps),
    ]
    return [c for c in every if c.family in args.families]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| flow | data | architecture (flowspec) | seeds | flowspec NLL − H | "
             "zuko NLL − H | flowspec − zuko | step ms flowspec / zuko (ratio) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case"].family, []).append(r)
    for family, rs in by_case.items():
        c = rs[0]["case"]
        f = [r["flowspec"]["gap"] for r in rs]
        z = [r["zuko"]["gap"] for r in rs]
        fm, zm = statistics.mean(f), statistics.mean(z)
        fms = statistics.median(r["flowspec"]["step_ms"] for r in rs)
        zms = statistics.median(r["zuko"]["step_ms"] for r in rs)
        per = ", ".join(f"{a:+.3f}" for a in f)
        zper = ", ".join(f"{a:+.3f}" for a in z)
        name = ZUKO_CLASS[family] + (" (flowspec degree 21)" if family == "bpf21" else "")
        lines.append(f"| {name} | {c.data} | {c.label()} | "
                     f"{len(rs)} × {c.steps} steps | {fm:+.3f} ({per}) | {zm:+.3f} ({zper}) "
                     f"| {fm - zm:+.3f} | {fms:.1f} / {zms:.1f} ({fms / zms:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models, 50 steps (smoke run)")
    ap.add_argument("--families", type=lambda s: s.split(","),
                    default=list(ZUKO_CLASS),
                    help="comma-separated: naf, unaf, sospf, bpf, bpf21")
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    ap.add_argument("--steps", type=int, default=None, help="steps per case (default 1000)")
    args = ap.parse_args(argv)
    if zuko is None:
        print("benchmarks/family_peers.py compares against zuko, which is not installed "
              "here; make the benchmark's venv (see the module docstring).", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, zuko {zuko.__version__}, threads "
          f"{torch.get_num_threads()}", flush=True)
    rows, datasets = [], {}
    for case in cases(args):
        if case.data not in datasets:
            datasets[case.data] = tabular.Data(case.data, None, 2000 if args.quick else None)
        for seed in args.seeds:
            t0 = time.perf_counter()
            r = run_case(case, datasets[case.data], seed)
            rows.append(r)
            f, z = r["flowspec"], r["zuko"]
            print(f"{case.family:>6} {case.data:>12} seed {seed}: flowspec {f['gap']:+.3f} "
                  f"({f['step_ms']:.1f} ms/step, {f['cpu_s']:.0f} CPU-s), zuko "
                  f"{z['gap']:+.3f} ({z['step_ms']:.1f} ms/step, {z['cpu_s']:.0f} CPU-s) "
                  f"[{time.perf_counter() - t0:.0f} s wall]", flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
