"""The numerically inverted flow families against zuko 1.6, same architecture and budget,
one process, interleaved (issue #17): NAF, UNAF, SOS polynomial and Bernstein
polynomial autoregressive flows on the 2-D toys and on a 64-D table (``mnist8x8``: MNIST
digits pooled to 8 × 8, see :class:`PooledMnist`).

Per case both libraries train side by side: every step both get the same minibatch and
the same optimizer (Adam, same lr, no schedule); which library steps first alternates,
so load from other jobs hits both alike. Reported: test NLL (nats, 10 000 points; toys:
minus the generator's entropy; ``mnist8x8``: in nats of the dequantized pooled digits,
and bits/dim), and the median train-step time of each (forward + backward + Adam step;
the density direction, which is one pass in both).

64-D table: the same transformers as the toy rows (UNAF smaller: integrand [32, 32],
8-number signal, 100 steps -- at the toys' sizes one step costs 5 and 9 CPU-s), T = 4
MADEs of [256, 256], 1000 steps of batch 256 (``--pooled-steps``, ``--unaf-steps``).

Matched: T autoregressive transforms, each a MADE with the same hidden widths (ReLU),
the order reversed every transform, a standard normal base, the transformer's own
sizes (stated per row). What differs, by each library's design:

* NAF: flowspec's ``dsf`` is the paper's deep sigmoidal flow (a softmax mixture of U
  sigmoids, its 3U numbers predicted per entry); zuko's NAF is a positive-weight
  monotonic MLP (64x64) shared by the entries of a dimension, fed a 16-number signal,
  its log-det by autograd. Same MADE, different transformer: the NAF paper's, and zuko's;
* UNAF: both integrate a free integrand net of (x, signal) by Gauss-Legendre (32 nodes,
  same widths); flowspec's net is shared by all dimensions (zuko: one per dimension)
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
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/family_peers.py --seeds 0,1,2 --tables toys
    FLOWSPEC_DATA=/path/to/data OMP_NUM_THREADS=1 .venv-bench/bin/python \
        benchmarks/family_peers.py --tables mnist8x8 --seeds 0   # data/mnist/*.gz (IDX)
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import tabular  # noqa: E402  (its Data: toys loaded once, NLL on the test split)

import flowspec  # noqa: E402
from flowspec.data import open_dataset  # noqa: E402

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


POOLED = "mnist8x8"
#: the pooled sums of 16 pixels (0 .. 4080) are dequantized on a grid of 4096 levels
POOLED_LEVELS = 4096


class PooledMnist:
    """MNIST digits average-pooled to 8 × 8 (64-D), in the model space both libraries see.

    flowspec's preprocessing has no pooling step, so the benchmark pools with torch: the
    uint8 digits (flowspec's MNIST loader; train = the 54 000 left after its 10 %
    validation carve, test = the 10 000 test digits) are zero-padded to 32 × 32 (as the
    ``pad`` step does), and each 4 × 4 block summed: ``S`` in 0 .. 4080, a discrete
    64-D datum. Dequantized uniformly on its grid, ``y = (S + u) / 4096`` in [0, 1)^64
    (once, seeded: train with seed 0, test with seed 1, the same tensors for both
    libraries), then the MAF paper's logit (alpha 1e-6) and a per-dimension
    standardisation fitted on train (zuko's advice for its bounded transformers). Both
    maps' log-dets are added to each test NLL, identically for both libraries, so the NLL
    is in nats of ``y``; ``-log P(S) <= E_u[NLL] + 64 ln 4096``, so ``bits/dim = NLL /
    (64 ln 2) + 12`` bounds the code length of the pooled sums.
    """

    name = POOLED
    entropy = None

    def __init__(self, data_dir: str | None, n_test: int | None):
        source, _ = open_dataset({"dataset": "mnist"}, data_dir)
        train, test = source.load("train").x, source.load("test").x
        test = test[:n_test] if n_test else test
        z, _ = tabular.Data._logit(self._dequantized(train, seed=0))
        zt, logit_ld = tabular.Data._logit(self._dequantized(test, seed=1))
        mean, std = z.mean(0), z.std(0)
        self.train = (z - mean) / std
        self.test = (zt - mean) / std
        self.test_logdet = logit_ld - torch.log(std.double()).sum()
        self.d = self.train.shape[1]

    @staticmethod
    def _dequantized(x: torch.Tensor, seed: int) -> torch.Tensor:
        x = F.pad(x.reshape(-1, 1, 28, 28).double(), (2, 2, 2, 2))
        sums = F.avg_pool2d(x, 4).reshape(x.shape[0], -1) * 16  # exact: integers 0 .. 4080
        u = torch.rand(sums.shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
        return (sums + u) / POOLED_LEVELS

    def nll(self, log_prob) -> dict[str, float]:
        """Mean test NLL in nats of y (both log-dets counted) and bits per pooled pixel."""
        nll = tabular.mean_test_nll(self.test, self.test_logdet, log_prob)
        return {"nll": nll, "bpd": nll / (self.d * math.log(2)) + math.log2(POOLED_LEVELS)}


def flowspec_flow(case: Case, d: int) -> torch.nn.Module:
    node = {"autoregressive": {"hidden": list(case.hidden), "parity": "${i}",
                               "transformer": case.transformer}}
    spec = {"model": {"input": [d], "flow": [{"repeat": case.transforms, "as": "i",
                                              "body": [node]}]}}
    return flowspec.load(spec).train()


def zuko_flow(case: Case, d: int) -> torch.nn.Module:
    cls = getattr(zuko.flows, ZUKO_CLASS[case.family])
    return cls(d, transforms=case.transforms, hidden_features=case.hidden,
               **case.zuko_kwargs).train()


def run_case(case: Case, data: tabular.Data | PooledMnist, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    fs = flowspec_flow(case, data.d)
    torch.manual_seed(seed)
    zk = zuko_flow(case, data.d)
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
    every = [c for c in every if "toys" in args.tables]
    if POOLED in args.tables:
        pt, ph = (2, (64, 64)) if q else (4, (256, 256))
        psteps, pb = args.pooled_steps or (20 if q else 1000), (64 if q else 256)
        every += [
            Case("naf", POOLED, pt, ph, {"dsf": {"units": 16}},
                 {"signal": 16, "network": {"hidden_features": (64, 64)}}, psteps, pb),
            # the integrand net runs at batch × 64 × (nodes + 1) points: at the toys' sizes
            # a step costs 5 (flowspec) and 9 (zuko) CPU-s here: a smaller net, fewer steps
            Case("unaf", POOLED, pt, ph,
                 {"umnn": {"hidden": [32, 32], "embedding": 8, "nodes": 32}},
                 {"signal": 8, "network": {"hidden_features": (32, 32)}},
                 args.unaf_steps or (5 if q else 100), pb),
            Case("sospf", POOLED, pt, ph, {"sos": {"polynomials": 3, "degree": 4}},
                 {"polynomials": 3, "degree": 4}, psteps, pb),
            Case("bpf", POOLED, pt, ph, {"bernstein": {"degree": 16, "bound": 5.0}},
                 {"degree": 16}, psteps, pb),
            Case("bpf21", POOLED, pt, ph, {"bernstein": {"degree": 21, "bound": 5.0}},
                 {"degree": 16}, psteps, pb),
        ]
    return [c for c in every if c.family in args.families]


def score(r: dict[str, Any]) -> float:
    """What a row is judged by: toys NLL − entropy, the 64-D table NLL (nats)."""
    return r["gap"] if "gap" in r else r["nll"]


def table(rows: list[dict[str, Any]]) -> str:
    pooled = rows[0]["case"].data == POOLED
    what = "test NLL (nats)" if pooled else "NLL − H"
    lines = [f"| flow | data | architecture (flowspec) | seeds | flowspec {what} | "
             f"zuko {what} | flowspec − zuko | step ms flowspec / zuko (ratio) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    if pooled:
        lines[0] = lines[0].replace(" | flowspec − zuko", " | bits/dim flowspec / zuko"
                                    " | flowspec − zuko")
        lines[1] += " ---: |"
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case"].family, []).append(r)
    for family, rs in by_case.items():
        c = rs[0]["case"]
        f = [score(r["flowspec"]) for r in rs]
        z = [score(r["zuko"]) for r in rs]
        fm, zm = statistics.mean(f), statistics.mean(z)
        fms = statistics.median(r["flowspec"]["step_ms"] for r in rs)
        zms = statistics.median(r["zuko"]["step_ms"] for r in rs)
        fmt = "{:.1f}" if pooled else "{:+.3f}"
        mean = "{:.2f}" if pooled else "{:+.3f}"
        per = ", ".join(fmt.format(a) for a in f)
        zper = ", ".join(fmt.format(a) for a in z)
        name = ZUKO_CLASS[family] + (" (flowspec degree 21)" if family == "bpf21" else "")
        bpd = ""
        if pooled:
            fb = statistics.mean(r["flowspec"]["bpd"] for r in rs)
            zb = statistics.mean(r["zuko"]["bpd"] for r in rs)
            bpd = f" {fb:.3f} / {zb:.3f} |"
        lines.append(f"| {name} | {c.data} | {c.label()} | "
                     f"{len(rs)} × {c.steps} steps × {c.batch} | {mean.format(fm)} ({per}) | "
                     f"{mean.format(zm)} ({zper}) |{bpd} {fm - zm:+.3f} | "
                     f"{fms:.1f} / {zms:.1f} ({fms / zms:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny models, 50 steps (64-D: 20, UNAF 5): a smoke run")
    ap.add_argument("--families", type=lambda s: s.split(","),
                    default=list(ZUKO_CLASS),
                    help="comma-separated: naf, unaf, sospf, bpf, bpf21")
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    ap.add_argument("--steps", type=int, default=None, help="steps per toy case (default 1000)")
    ap.add_argument("--tables", type=lambda s: s.split(","), default=["toys", POOLED],
                    help=f"comma-separated: toys, {POOLED} (default both)")
    ap.add_argument("--pooled-steps", type=int, default=None,
                    help=f"steps per {POOLED} case (default 1000)")
    ap.add_argument("--unaf-steps", type=int, default=None,
                    help=f"steps of the {POOLED} UNAF case (default 100)")
    ap.add_argument("--data-dir", default=None, help="where mnist/ is (else $FLOWSPEC_DATA)")
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
            n_test = 2000 if args.quick else None
            datasets[case.data] = (PooledMnist(args.data_dir, n_test) if case.data == POOLED
                                   else tabular.Data(case.data, None, n_test))
        for seed in args.seeds:
            t0 = time.perf_counter()
            r = run_case(case, datasets[case.data], seed)
            rows.append(r)
            f, z = r["flowspec"], r["zuko"]
            print(f"{case.family:>6} {case.data:>12} seed {seed}: flowspec {score(f):+.3f} "
                  f"({f['step_ms']:.1f} ms/step, {f['cpu_s']:.0f} CPU-s), zuko "
                  f"{score(z):+.3f} ({z['step_ms']:.1f} ms/step, {z['cpu_s']:.0f} CPU-s) "
                  f"[{time.perf_counter() - t0:.0f} s wall]", flush=True)
    for data in dict.fromkeys(r["case"].data != POOLED for r in rows):
        print()
        print(table([r for r in rows if (r["case"].data != POOLED) == data]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
