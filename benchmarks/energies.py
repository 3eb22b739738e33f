"""Reverse KL reached by planar flows on U1-U4 (Rezende & Mohamed 2015, Fig. 3b).

For every energy and every flow length K, builds ``specs/planar_uN.yaml`` with
``vars.K = K``, trains it by reverse KL for a fixed step budget (β annealed from
the spec's ``beta0`` to 1 over the first half), and prints the KL(q‖p) in nats
(free energy + log Z, log Z by quadrature) on fresh samples, with the importance
sampling efficiency beside it. The paper's finding to look for: the KL falls as
K grows, and U3/U4 need more nodes than U1/U2.

    python benchmarks/energies.py [--steps 2000] [--ks 2,8,32] [--energies U1,U2,U3,U4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import flowspec
from flowspec.energies import build_energy
from flowspec.objectives.reverse_kl import beta_schedule, evaluate_reverse_kl, reverse_kl_loss

SPECS = Path(__file__).parent.parent / "specs"


def train_one(energy_name: str, k: int, steps: int, seed: int, eval_n: int) -> dict:
    torch.manual_seed(seed)
    flow = flowspec.load(SPECS / f"planar_u{energy_name[1:]}.yaml", {"vars.K": k}).train()
    cfg = flow.spec.train
    energy = build_energy(cfg["target"])
    (_, opt_cfg), = cfg["optimizer"].items()  # the planar specs use adam
    opt = torch.optim.Adam(flow.parameters(), lr=opt_cfg["lr"])
    beta0 = cfg["anneal"]["beta0"] if cfg.get("anneal") else 1.0
    start = time.perf_counter()
    for step in range(steps):
        loss, _ = reverse_kl_loss(flow, energy, cfg["batch_size"],
                                  beta_schedule(step, beta0, steps // 2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(flow.parameters(), cfg["grad_clip"])
        opt.step()
    seconds = time.perf_counter() - start
    flow.eval()
    torch.manual_seed(seed + 1)
    return {**evaluate_reverse_kl(flow, energy, n=eval_n), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="optimisation steps per run")
    ap.add_argument("--ks", default="2,8,32", help="flow lengths K, comma-separated")
    ap.add_argument("--energies", default="U1,U2,U3,U4")
    ap.add_argument("--eval-n", type=int, default=20_000, help="samples for the KL estimate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    names = args.energies.split(",")

    print(f"reverse KL(q||p) in nats after {args.steps} steps (ESS fraction in brackets)")
    print(f"{'energy':>8} {'log Z':>8} " + " ".join(f"{'K=' + str(k):>16}" for k in ks))
    total = time.perf_counter()
    for name in names:
        cells = []
        for k in ks:
            r = train_one(name, k, args.steps, args.seed, args.eval_n)
            cells.append(f"{r['kl_nats']:8.3f} ({r['ess']:.2f})")
        print(f"{name:>8} {build_energy(name).log_z:8.4f} " + " ".join(f"{c:>16}" for c in cells),
              flush=True)
    print(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
