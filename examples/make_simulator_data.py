"""Write a simulator's draws (θ, x) for conditional density estimation p(x | θ).

The simulator is the "two moons" benchmark of simulation-based inference
(Greenberg et al. 2019; sbibm's ``two_moons``): θ ~ U[-1, 1]², and x is a point
on a thin half-ring (a crescent) whose position depends on θ:

    a ~ U(-π/2, π/2),  r ~ N(0.1, 0.01²),  p = (r cos a + 0.25, r sin a)
    x = p + (-|θ1 + θ2| / √2, (-θ1 + θ2) / √2)

Its likelihood is known: in polar coordinates around the crescent's centre the
density of x is N(r; 0.1, 0.01²) / (π r), so the conditional entropy
H(x | θ) = H(N(0.1, 0.01²)) + ln π + E[ln r] ≈ -4.3491 nats is the floor of the
test NLL of any model of p(x | θ) (printed below; the same for every θ, since θ
only shifts the crescent).

    python examples/make_simulator_data.py                 # data/simulator.npz
    python examples/make_simulator_data.py --csv           # also data/simulator.csv
    flowspec train specs/conditional_simulator.yaml
    flowspec sample runs/conditional_simulator -o x.csv --context 0.5,-0.3
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np


def simulate(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One x per row of θ ``[N, 2]``."""
    n = theta.shape[0]
    a = rng.uniform(-math.pi / 2, math.pi / 2, n)
    r = rng.normal(0.1, 0.01, n)
    p = np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], axis=1)
    shift = np.stack([-np.abs(theta[:, 0] + theta[:, 1]) / math.sqrt(2),
                      (-theta[:, 0] + theta[:, 1]) / math.sqrt(2)], axis=1)
    return p + shift


def conditional_entropy(mu: float = 0.1, sigma: float = 0.01) -> float:
    """H(x | θ) in nats: -E[log N(r; mu, sigma) - log π - log r], E[log r] by quadrature."""
    r = np.linspace(mu - 9 * sigma, mu + 9 * sigma, 200_001)  # r > 0; mass 1 - 2e-19
    w = np.exp(-0.5 * ((r - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    e_log_r = float(np.trapezoid(w * np.log(r), r))
    h_normal = 0.5 * math.log(2 * math.pi * math.e * sigma * sigma)
    return h_normal + math.log(math.pi) + e_log_r


def main() -> None:
    default_dir = Path(os.environ.get("FLOWSPEC_DATA") or "data")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="number of (θ, x) pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=default_dir / "simulator.npz")
    ap.add_argument("--csv", action="store_true",
                    help="also write the same draws as a csv (columns theta1,theta2,x1,x2)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    theta = rng.uniform(-1.0, 1.0, (args.n, 2))
    x = simulate(theta, rng)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, x=x.astype(np.float32), theta=theta.astype(np.float32))
    print(f"wrote {args.out}: x {list(x.shape)}, theta {list(theta.shape)}")
    if args.csv:
        path = args.out.with_suffix(".csv")
        np.savetxt(path, np.concatenate([theta, x], axis=1), delimiter=",",
                   header="theta1,theta2,x1,x2", comments="", fmt="%.7g")
        print(f"wrote {path}")
    print(f"entropy floor H(x | theta) = {conditional_entropy():.4f} nats")


if __name__ == "__main__":
    main()
