"""Learning per step: flowspec's ``nice_mnist`` vs a hand-written NICE on real MNIST.

Both models train for the same number of steps on the same batches (same seed,
same dequantization noise, same optimizer settings as the spec), then report
test NLL in nats and bits/dim through the same audited conversion. flowspec
must learn at least as well (within noise) and as fast.

    FLOWSPEC_DATA=../shared/data python benchmarks/nice_mnist_budget.py --steps 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_nice import HandNICE  # noqa: E402

from flowspec.api import build_flow  # noqa: E402
from flowspec.data import open_dataset  # noqa: E402
from flowspec.metrics import bits_per_dim  # noqa: E402
from flowspec.spec import load_spec  # noqa: E402
from flowspec.train.optim import build_optimizer, build_scheduler  # noqa: E402

SPEC = Path(__file__).parent.parent / "specs" / "nice_mnist.yaml"


@torch.no_grad()
def test_nll(log_prob, x_test, prep, batch=1000) -> float:
    gen = torch.Generator(device=x_test.device).manual_seed(0)
    total = 0.0
    for i in range(0, x_test.shape[0], batch):
        total += float(-log_prob(prep(x_test[i:i + batch], generator=gen)).double().sum())
    return total / x_test.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--test-examples", type=int, default=10_000)
    args = ap.parse_args()
    dev = torch.device(args.device)
    spec = load_spec(SPEC)
    source, prep = open_dataset(spec.data, args.data_dir)
    x_train = source.load("train").x.to(dev)
    x_test = source.load("test").x[: args.test_examples].to(dev)
    cfg = spec.train
    torch.manual_seed(0)
    flow = build_flow(spec).to(dev).train()
    torch.manual_seed(0)
    hand = HandNICE().to(dev)
    models = {"flowspec": (flow, flow.log_prob), "hand": (hand, hand.log_prob)}
    opts = {k: build_optimizer(m.parameters(), cfg) for k, (m, _) in models.items()}
    scheds = {k: build_scheduler(o, cfg, args.steps) for k, o in opts.items()}
    clip = cfg["grad_clip"]
    dims = flow.num_dims
    elapsed = {k: 0.0 for k in models}
    gen = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        idx = torch.randint(0, x_train.shape[0], (cfg["batch_size"],), generator=gen)
        noise_seed = 1000 + step
        for k, (model, log_prob) in models.items():
            t0 = time.perf_counter()
            torch.manual_seed(noise_seed)
            x = prep(x_train[idx.to(dev)])
            loss = -log_prob(x).mean() / dims
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opts[k].step()
            scheds[k].step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            elapsed[k] += time.perf_counter() - t0
    print(f"device={dev} steps={args.steps} batch={cfg['batch_size']} "
          f"test examples={x_test.shape[0]}")
    for k, (model, log_prob) in models.items():
        model.eval()
        nll = test_nll(log_prob, x_test, prep)
        bpd = bits_per_dim(nll, dims, prep.n_bits)
        print(f"{k:>9}: test nll {nll:9.2f} nats  {bpd:.4f} bits/dim  "
              f"{elapsed[k] / args.steps * 1000:.1f} ms/step")
    print(f"time ratio flowspec/hand = {elapsed['flowspec'] / elapsed['hand']:.3f}")


if __name__ == "__main__":
    main()
