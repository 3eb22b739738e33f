"""Compiled-flow overhead: flowspec's ``nice_mnist`` vs the same NICE by hand.

Times forward + backward + Adam step at batch 200 for both models, interleaved
in one process (so machine noise hits both alike), and prints the ratio of
medians. Target: <= 1.05.

    python benchmarks/overhead.py [--device cpu|cuda] [--rounds 20] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_nice import HandNICE  # noqa: E402
from timing import train_step  # noqa: E402

import flowspec  # noqa: E402

SPEC = Path(__file__).parent.parent / "specs" / "nice_mnist.yaml"


def timed(fn, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    flow = flowspec.load(SPEC).train().to(dev)
    hand = HandNICE().to(dev)
    n_flow = sum(p.numel() for p in flow.parameters())
    n_hand = sum(p.numel() for p in hand.parameters())
    assert n_flow == n_hand, f"architectures differ: {n_flow} vs {n_hand} parameters"
    x = torch.rand(args.batch, 1, 28, 28, device=dev)
    steps = {
        "flowspec": train_step(flow.log_prob, torch.optim.Adam(flow.parameters(), 1e-4), x),
        "hand": train_step(hand.log_prob, torch.optim.Adam(hand.parameters(), 1e-4), x),
    }
    for fn in steps.values():  # warm-up
        timed(fn, 2, dev)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for k in order:
            times[k].append(timed(steps[k], args.steps, dev))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device={dev} batch={args.batch} params={n_flow:,} threads={torch.get_num_threads()}")
    for k, v in med.items():
        print(f"{k:>9}: {v * 1000:8.2f} ms/step (median of {args.rounds} x {args.steps})")
    print(f"ratio flowspec/hand = {med['flowspec'] / med['hand']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
