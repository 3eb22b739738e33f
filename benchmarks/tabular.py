"""Autoregressive flows: flowspec's `maf` / `rq_spline_autoregressive` against zuko's
`MAF` / `NSF`, same architecture, data, batches and budget, in one process.

For each dataset and each family the two libraries train side by side: every step
both get the same minibatch, with the same optimizer (Adam, same lr); which library
steps first alternates, so machine noise hits both alike. Reported: test NLL in
nats after the budget (toys: also minus the generator's entropy; MNIST: also
bits/dim) and the ratio of median train-step times, flowspec / zuko.

Architecture, matched: T autoregressive transforms, each a MADE with the same
hidden widths (ReLU) and sequential hidden degrees, the order reversed every
transform (zuko: natural/reversed alternately; flowspec: `parity: ${i}`), a
standard normal base; NSF: the same bins and tail bound 5 (zuko's fixed bound).
Differences that remain: flowspec zero-initialises each MADE's last layer (zuko
uses PyTorch's default init) and soft-clamps MAF log-scales with 5 tanh(a/5)
(zuko: a / (1 + |a| / 6.9)); the context-free first dimension has no hidden
units of its own in either.

Data: 2-D toys from flowspec's generators (50k train / 10k test). MNIST: the MAF
paper's preprocessing -- uniform dequantization to [0, 1], logit(1e-6 + (1 - 2e-6) x),
784-D -- applied identically outside both models; NLL is reported in [0, 1] pixel
space (the logit's log-det added) and as bits/dim; the NSF case standardizes each
dimension first (identically for both; zuko advises it, its splines act on [-5, 5] and
logit pixels reach -13.8), with that log-det counted too. MNIST IDX files come from
--data-dir or $FLOWSPEC_DATA (e.g. FLOWSPEC_DATA=data, relative to the repository).

zuko is not a flowspec dependency; the benchmark has its own venv:

    python -m venv .venv-bench && . .venv-bench/bin/activate
    pip install torch==2.13.0 && pip install -e . -r benchmarks/requirements-tabular.txt
    OMP_NUM_THREADS=1 python benchmarks/tabular.py --quick          # ~1 min smoke run
    OMP_NUM_THREADS=1 python benchmarks/tabular.py                  # toys + MNIST
    OMP_NUM_THREADS=1 python benchmarks/tabular.py --no-mnist --toys moons
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch

import flowspec
from flowspec.data import open_dataset

try:
    import zuko
except ImportError:  # pragma: no cover - depends on the environment
    zuko = None

TOYS = ("moons", "8gaussians", "2spirals", "checkerboard")
LOGIT_ALPHA = 1e-6


@dataclass
class Case:
    data: str
    family: str  # "maf" | "nsf"
    transforms: int
    hidden: tuple[int, ...]
    steps: int
    batch: int
    lr: float
    bins: int = 8
    bound: float = 5.0
    #: standardize each dimension first (zuko's advice for its splines on [-5, 5]);
    #: the affine map's log-det is counted, so NLLs stay in data space
    standardize: bool = False


def flowspec_flow(case: Case, d: int) -> torch.nn.Module:
    if case.family == "maf":
        node = {"maf": {"hidden": list(case.hidden), "parity": "${i}"}}
    else:
        node = {"rq_spline_autoregressive": {"hidden": list(case.hidden), "bins": case.bins,
                                             "bound": case.bound, "parity": "${i}"}}
    spec = {"model": {"input": [d], "flow": [{"repeat": case.transforms, "as": "i",
                                              "body": [node]}]}}
    return flowspec.load(spec).train()


def zuko_flow(case: Case, d: int) -> torch.nn.Module:
    if case.family == "maf":
        return zuko.flows.MAF(d, transforms=case.transforms, hidden_features=case.hidden)
    return zuko.flows.NSF(d, transforms=case.transforms, hidden_features=case.hidden,
                          bins=case.bins)


def mean_test_nll(test: torch.Tensor, test_logdet: torch.Tensor, log_prob) -> float:
    """Mean ``-(log_prob(y) + log-det of the preprocessing)`` over ``test``, in nats of the
    data before preprocessing (batches of 1000, no gradients)."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, test.shape[0], 1000):
            lp = log_prob(test[start:start + 1000]).double()
            total += float((-(lp + test_logdet[start:start + 1000])).sum())
    return total / test.shape[0]


class Data:
    """Train/test tensors in model space, and how to report NLL in data space."""

    def __init__(self, name: str, data_dir: str | None, n_test: int | None):
        self.name = name
        self.entropy: float | None = None
        if name == "mnist":
            source, prep = open_dataset({"dataset": "mnist", "preprocess": [
                {"dequantize": "uniform"}]}, data_dir)
            gen = torch.Generator().manual_seed(0)
            tr, te = source.load("train").x, source.load("test").x
            te = te[:n_test] if n_test else te
            self.train = self._logit(prep(tr, generator=gen).reshape(tr.shape[0], -1))[0]
            self.test, self.test_logdet = self._logit(
                prep(te, generator=gen).reshape(te.shape[0], -1))
        else:
            source, _ = open_dataset({"dataset": name}, data_dir)
            self.train = source.load("train").x.float()
            self.test = source.load("test").x.float()
            self.test = self.test[:n_test] if n_test else self.test
            self.test_logdet = torch.zeros(self.test.shape[0])
            self.entropy = source.entropy
        self.d = self.train.shape[1]

    @staticmethod
    def _logit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MAF paper's logit, and log|dy/dx| per example (added back for pixel-space NLL)."""
        p = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x.double()
        y = torch.log(p) - torch.log1p(-p)
        ld = (math.log1p(-2 * LOGIT_ALPHA) - torch.log(p) - torch.log1p(-p)).sum(1)
        return y.float(), ld

    def standardized(self) -> Data:
        """Each dimension scaled to zero mean, unit variance on train (log-det counted)."""
        out = object.__new__(Data)
        out.__dict__.update(self.__dict__)
        mean, std = self.train.mean(0), self.train.std(0).clamp_min(1e-3)
        out.train = (self.train - mean) / std
        out.test = (self.test - mean) / std
        out.test_logdet = self.test_logdet - torch.log(std.double()).sum()
        return out

    def nll(self, log_prob) -> dict[str, float]:
        """Mean test NLL in data space (nats), plus bits/dim for MNIST or minus entropy."""
        nll = mean_test_nll(self.test, self.test_logdet, log_prob)
        out = {"nll": nll}
        if self.name == "mnist":
            out["bpd"] = (nll + self.d * math.log(256)) / (self.d * math.log(2))
        if self.entropy is not None:
            out["gap"] = nll - self.entropy
        return out


def run_case(case: Case, data: Data, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    fs = flowspec_flow(case, data.d)
    torch.manual_seed(seed)
    zk = zuko_flow(case, data.d).train()
    sides = {
        "flowspec": (fs, lambda x: fs.log_prob(x)),
        "zuko": (zk, lambda x: zk().log_prob(x)),
    }
    opts = {k: torch.optim.Adam(m.parameters(), lr=case.lr) for k, (m, _) in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    gen = torch.Generator().manual_seed(seed + 1)
    n = data.train.shape[0]
    for step in range(case.steps):
        x = data.train[torch.randint(0, n, (case.batch,), generator=gen)]
        order = ["flowspec", "zuko"] if step % 2 == 0 else ["zuko", "flowspec"]
        for key in order:
            _, log_prob = sides[key]
            t0 = time.perf_counter()
            loss = -log_prob(x).mean()
            opts[key].zero_grad(set_to_none=True)
            loss.backward()
            opts[key].step()
            times[key].append(time.perf_counter() - t0)
            if not math.isfinite(float(loss.detach())):
                raise RuntimeError(f"{key} diverged at step {step} on {case.data}/{case.family}")
    warm = max(1, case.steps // 10)  # first steps: allocator and caches warming up
    result = {"case": case}
    for key, (model, log_prob) in sides.items():
        model.eval()
        result[key] = data.nll(log_prob)
        result[key]["step_ms"] = 1e3 * statistics.median(times[key][warm:])
    result["ratio"] = result["flowspec"]["step_ms"] / result["zuko"]["step_ms"]
    return result


def cases(args) -> list[Case]:
    out: list[Case] = []
    q = args.quick
    toy_steps = args.steps or (100 if q else 1000)
    for toy in args.toys:
        out.append(Case(toy, "maf", 4 if q else 8, (32, 32) if q else (128, 128), toy_steps,
                        256, 1e-3))
        out.append(Case(toy, "nsf", 2 if q else 4, (32, 32) if q else (128, 128), toy_steps,
                        512, 1e-3, bins=16))
    if not args.no_mnist:
        m_steps = args.mnist_steps or (10 if q else 100)
        out.append(Case("mnist", "maf", 2 if q else 5, (64, 64) if q else (1024, 1024),
                        m_steps, 100, 1e-3))
        out.append(Case("mnist", "nsf", 1 if q else 2, (64, 64) if q else (256, 256),
                        m_steps, 100, 1e-3, bins=8, standardize=True))
    return [c for c in out if c.family in args.families]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models and budgets (smoke run)")
    ap.add_argument("--toys", type=lambda s: [t for t in s.split(",") if t and t != "none"],
                    default=list(TOYS), help="comma-separated toys (default: all four; "
                    "'none' for MNIST only)")
    ap.add_argument("--no-mnist", action="store_true")
    ap.add_argument("--families", type=lambda s: s.split(","), default=["maf", "nsf"],
                    help="comma-separated: maf, nsf (default both)")
    ap.add_argument("--steps", type=int, default=None, help="toy steps (default 1000)")
    ap.add_argument("--mnist-steps", type=int, default=None, help="MNIST steps (default 100)")
    ap.add_argument("--data-dir", default=None, help="where mnist/ is (else $FLOWSPEC_DATA)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if zuko is None:
        print("benchmarks/tabular.py compares against zuko, which is not installed here.\n"
              "Make the benchmark's own venv (zuko is never a flowspec dependency):\n"
              "  python -m venv .venv-bench && . .venv-bench/bin/activate\n"
              "  pip install torch==2.13.0 && pip install -e . "
              "-r benchmarks/requirements-tabular.txt", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, zuko {zuko.__version__}, threads "
          f"{torch.get_num_threads()}", flush=True)
    rows = []
    datasets: dict[str, Data] = {}
    for case in cases(args):
        if case.data not in datasets:
            datasets[case.data] = Data(case.data, args.data_dir,
                                       2000 if args.quick else None)
        t0 = time.perf_counter()
        data = datasets[case.data]
        r = run_case(case, data.standardized() if case.standardize else data, args.seed)
        rows.append(r)
        print(f"{case.data:>12} {case.family}: flowspec {r['flowspec']['nll']:.3f} nats "
              f"({r['flowspec']['step_ms']:.1f} ms/step), zuko {r['zuko']['nll']:.3f} nats "
              f"({r['zuko']['step_ms']:.1f} ms/step), time ratio {r['ratio']:.2f} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    print()
    print("| data | flow | T × hidden | steps × batch | flowspec NLL | zuko NLL | "
          "flowspec − zuko | step time flowspec / zuko |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        c, f, z = r["case"], r["flowspec"], r["zuko"]
        arch = f"{c.transforms} × {list(c.hidden)}" + (f", {c.bins} bins" if c.family == "nsf"
                                                       else "")
        arch += ", standardized" if c.standardize else ""
        extra = ""
        if "bpd" in f:
            extra = f" ({f['bpd']:.3f} / {z['bpd']:.3f} bits/dim)"
        elif "gap" in f:
            extra = f" (floor +{f['gap']:.3f} / +{z['gap']:.3f})"
        print(f"| {c.data} | {'MAF' if c.family == 'maf' else 'NSF (AR)'} | {arch} | "
              f"{c.steps} × {c.batch} | {f['nll']:.3f} | {z['nll']:.3f} | "
              f"{f['nll'] - z['nll']:+.3f}{extra} | {r['ratio']:.2f} "
              f"({f['step_ms']:.1f} / {z['step_ms']:.1f} ms) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
