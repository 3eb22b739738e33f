"""Why flowspec's `maf` / `rq_spline_autoregressive` trail zuko's MAF / NSF on the
checkerboard at 1000 steps: the two differences named in benchmarks/tabular.py, one at
a time, with several seeds.

Variants of the flowspec model (same architecture, data, batches and optimizer as
tabular.py's matched cases; every variant trains on the same minibatch stream):

* ``flowspec``: as shipped (each MADE's last layer zero-initialised, so every layer
  starts as the identity; spline derivatives ``1e-3 + softplus(d + c)``);
* ``flowspec+init``: the MADEs' last layers re-drawn with PyTorch's default init (zuko's);
* ``flowspec+exp`` (NSF only): spline derivatives ``exp(softclip(d))`` bounded to
  [1e-3, 1e3] (zuko's parametrisation), zero init kept;
* ``flowspec+zspline`` (NSF only): zuko's whole spline parametrisation -- the exp
  derivatives above plus bin-width and -height logits soft-clipped to
  ``w / (1 + |2 w / log 1e-3|)`` before the softmax;
* ``zuko``: zuko 1.6's MAF / NSF.

Runs in the tabular benchmark's venv (zuko is not a flowspec dependency):

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ar_gap.py --seeds 0,1,2 --steps 1000
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import tabular  # noqa: E402

import flowspec.bijectors.transformers as transformers  # noqa: E402
from flowspec.bijectors.spline import _UNIT_DERIVATIVE, MIN_DERIVATIVE  # noqa: E402

LOG_SLOPE = math.log(1e-3)


def _exp_derivatives(d: torch.Tensor) -> torch.Tensor:
    """Raw inputs that make flowspec's ``1e-3 + softplus(. + c)`` equal zuko's
    ``exp(d / (1 + |d / log 1e-3|))`` (clamped just above 1e-3)."""
    target = torch.exp(d / (1 + (d / LOG_SLOPE).abs()))
    excess = (target - MIN_DERIVATIVE).clamp_min(1e-7)
    return excess + torch.log(-torch.expm1(-excess)) - _UNIT_DERIVATIVE  # softplus⁻¹


def _clip_bins(w: torch.Tensor) -> torch.Tensor:
    return w / (1 + (2 * w / LOG_SLOPE).abs())


@contextmanager
def exp_derivatives(clip_bins: bool = False):
    original = transformers.rq_spline

    def patched(x, w, h, d, bound, inverse=False):
        if clip_bins:
            w, h = _clip_bins(w), _clip_bins(h)
        return original(x, w, h, _exp_derivatives(d), bound, inverse)

    transformers.rq_spline = patched
    try:
        yield
    finally:
        transformers.rq_spline = original


def default_init(flow: torch.nn.Module) -> None:
    """Re-draw each MADE's output layer with PyTorch's default init."""
    for module in flow.modules():
        if type(module).__name__ == "MADE":
            module.layers[-1].reset_parameters()


def train(model, log_prob, data, case, seed: int, patch=None):
    opt = torch.optim.Adam(model.parameters(), lr=case.lr)
    gen = torch.Generator().manual_seed(seed + 1)
    n = data.train.shape[0]
    times = []
    with patch() if patch else _null():
        for _ in range(case.steps):
            x = data.train[torch.randint(0, n, (case.batch,), generator=gen)]
            t0 = time.perf_counter()
            loss = -log_prob(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        model.eval()
        out = data.nll(log_prob)
    out["step_ms"] = 1e3 * statistics.median(times[len(times) // 10:])
    return out


@contextmanager
def _null():
    yield


def variants(case, d):
    def fs(init=False):
        def make():
            flow = tabular.flowspec_flow(case, d)
            if init:
                default_init(flow)
            return flow, flow.log_prob
        return make

    def zk():
        flow = tabular.zuko_flow(case, d).train()
        return flow, lambda x: flow().log_prob(x)

    out = {"flowspec": (fs(), None), "flowspec+init": (fs(True), None)}
    if case.family == "nsf":
        out["flowspec+exp"] = (fs(), exp_derivatives)
        out["flowspec+zspline"] = (fs(), lambda: exp_derivatives(clip_bins=True))
    out["zuko"] = (zk, None)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", default="checkerboard")
    ap.add_argument("--families", default="maf,nsf")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--variants", default="flowspec,flowspec+init,flowspec+exp,zuko",
                    help="which of the variants to run (comma-separated)")
    args = ap.parse_args(argv)
    data = tabular.Data(args.toy, None, None)
    seeds = [int(s) for s in args.seeds.split(",")]
    for family in args.families.split(","):
        case = next(c for c in tabular.cases(argparse.Namespace(
            quick=False, toys=[args.toy], no_mnist=True, steps=args.steps,
            families=[family])))
        gaps: dict[str, list[float]] = {}
        for seed in seeds:
            for name, (make, patch) in variants(case, data.d).items():
                if name not in args.variants.split(","):
                    continue
                torch.manual_seed(seed)
                model, log_prob = make()
                r = train(model, log_prob, data, case, seed, patch)
                gaps.setdefault(name, []).append(r["gap"])
                print(f"{args.toy} {family} seed={seed} {name}: gap={r['gap']:+.4f} "
                      f"step={r['step_ms']:.1f} ms", flush=True)
        print(f"\n{args.toy} {family}, {case.steps} steps, seeds {seeds}: "
              "NLL - entropy (mean ± std)")
        for name, g in gaps.items():
            sd = statistics.stdev(g) if len(g) > 1 else 0.0
            print(f"  {name:14s} {statistics.mean(g):+.4f} ± {sd:.4f}   {[round(v, 4) for v in g]}")
        print(flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
