"""Free-form flows against their peers, one process, interleaved (issue #16):

* flowspec ``cnf`` vs zuko ``CNF`` on 8gaussians: train step time, NFE per step, test NLL;
* flowspec ``residual`` vs normflows ``Residual`` on moons: train step time, test NLL.

Same budget for both sides (batch, steps, optimiser, seed); the architectures are
as close as each library allows (stated in the printed table). Peers live in a
separate venv, never in flowspec's dependencies:

    python -m venv --system-site-packages .venv-bench
    .venv-bench/bin/pip install --no-deps zuko normflows
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/freeform_peers.py --steps 2000

Each round runs one step of every model in turn (so load from other jobs hits them
alike); the table gives the median step time and, for the CNFs, the mean number of
function evaluations of the forward solve. Every ``--eval-every`` steps each model's
NLL on the same held-out draws (``--test`` of them) is measured, minus the toy's
known entropy: the second table is the NLL-to-convergence curve, the first the last
value.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowspec.bijectors import NODES
from flowspec.data.toys import ENTROPY, eight_gaussians, moons


def _std_normal_logp(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z ** 2).sum(1) - z.shape[1] * 0.5 * torch.log(torch.tensor(2 * torch.pi))


class FlowspecCNF(torch.nn.Module):
    label = "flowspec cnf: time_mlp 64x3 concatsquash tanh, dopri5 1e-4, exact trace"

    def __init__(self):
        super().__init__()
        self.node = NODES.build({"cnf": {"net": {"time_mlp": {"hidden": [64, 64, 64]}},
                                         "rtol": 1e-4, "atol": 1e-4, "trace": "exact"}}, (2,))

    def loss(self, x):
        z, ld = self.node(x)
        return -(_std_normal_logp(z) + ld).mean()

    def nfe(self):
        return self.node.nfe


class ZukoCNF(torch.nn.Module):
    label = "zuko CNF: MLP 64x3 (ELU) on [x, sin/cos(t)], its dopri5 1e-4, exact trace"

    def __init__(self):
        super().__init__()
        import zuko

        self.flow = zuko.flows.CNF(2, hidden_features=(64, 64, 64), atol=1e-4, rtol=1e-4,
                                   exact=True)
        self.calls = 0
        net = self.flow.transform.ode
        original = net.forward

        def counted(*a, **k):
            self.calls += 1
            return original(*a, **k)

        net.forward = counted

    def loss(self, x):
        self.calls = 0
        out = -self.flow().log_prob(x).mean()
        self._nfe = self.calls
        return out

    def nfe(self):
        return self._nfe


class FlowspecResidual(torch.nn.Module):
    label = "flowspec residual x4: lipschitz_mlp 64x3 LipSwish, L=0.97, exact 2-D log-det"

    def __init__(self):
        super().__init__()
        self.nodes = torch.nn.ModuleList(
            NODES.build({"residual": {"net": {"lipschitz_mlp": {"hidden": [64, 64, 64]}},
                                      "lipschitz": 0.97, "logdet": "exact"}}, (2,))
            for _ in range(4))

    def loss(self, x):
        ld = 0
        for node in self.nodes:
            x, d = node(x)
            ld = ld + d
        return -(_std_normal_logp(x) + ld).mean()


class NormflowsResidual(torch.nn.Module):
    label = "normflows Residual x4: LipschitzMLP 64x3 (LipSwish), L=0.97, exact trace"

    def __init__(self):
        super().__init__()
        import normflows as nf

        flows = [nf.flows.Residual(nf.nets.LipschitzMLP([2, 64, 64, 64, 2], init_zeros=False,
                                                        lipschitz_const=0.97),
                                   exact_trace=True, reduce_memory=False)
                 for _ in range(4)]
        self.model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)

    def loss(self, x):
        return self.model.forward_kld(x)


def test_nll(model: torch.nn.Module, x: torch.Tensor, chunk: int = 1024) -> float:
    """Mean NLL on held-out ``x`` (autograd on: the exact traces need it; no step)."""
    model.eval()
    total = 0.0
    for part in x.split(chunk):
        total += float(model.loss(part).detach()) * len(part)
    model.train()
    return total / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="steps between test-NLL evaluations (0: only at the end)")
    parser.add_argument("--test", type=int, default=4096, help="held-out draws per toy")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    data = {"8gaussians": eight_gaussians(args.batch * args.steps, g).float(),
            "moons": moons(args.batch * args.steps, g).float()}
    gt = torch.Generator().manual_seed(1)
    test = {"8gaussians": eight_gaussians(args.test, gt).float(),
            "moons": moons(args.test, gt).float()}
    torch.manual_seed(0)
    models = [(FlowspecCNF(), "8gaussians"), (ZukoCNF(), "8gaussians"),
              (FlowspecResidual(), "moons"), (NormflowsResidual(), "moons")]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m, _ in models]
    times: list[list[float]] = [[] for _ in models]
    nfes: list[list[int]] = [[] for _ in models]
    curves: list[list[tuple[int, float]]] = [[] for _ in models]
    every = args.eval_every or args.steps
    for step in range(1, args.steps + 1):
        for i, ((model, ds), opt) in enumerate(zip(models, opts)):
            x = data[ds][(step - 1) * args.batch:step * args.batch]
            t0 = time.perf_counter()
            loss = model.loss(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times[i].append(time.perf_counter() - t0)
            if hasattr(model, "nfe"):
                nfes[i].append(model.nfe())
            if step % every == 0 or step == args.steps:
                curves[i].append((step, test_nll(model, test[ds]) - ENTROPY[ds]))
        if step % every == 0:
            print(f"step {step}: " + ", ".join(f"{m.label.split(':')[0]} {c[-1][1]:.3f}"
                                             for (m, _), c in zip(models, curves)), flush=True)
    print(f"{args.steps} steps, batch {args.batch}, Adam 1e-3, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); test: {args.test} held-out draws")
    print("| model | data | median step (ms) | NFE (forward solve) | test NLL − entropy (nats) |")
    print("| --- | --- | --- | --- | --- |")
    for (model, ds), t, n, curve in zip(models, times, nfes, curves):
        nfe = f"{statistics.mean(n):.0f}" if n else "—"
        print(f"| {model.label} | {ds} | {1000 * statistics.median(t[1:]):.1f} | {nfe} | "
              f"{curve[-1][1]:.3f} |")
    steps = [s for s, _ in curves[0]]
    print("\n| model | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("| --- |" + " --- |" * len(steps))
    for (model, _), curve in zip(models, curves):
        print(f"| {model.label.split(':')[0]} | " + " | ".join(f"{v:.3f}" for _, v in curve)
              + " |")


if __name__ == "__main__":
    main()
